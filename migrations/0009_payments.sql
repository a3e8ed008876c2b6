-- Payments: a confirmed order asks for one, a provider settles it by a signed webhook; a paid order may close.
-- depends: 0008_outbox_wakeup

-- The allowed statuses are orders_svc/states.py's OrderStatus; a test holds the two together.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('draft', 'confirmed', 'paid', 'closed', 'cancelled'));

CREATE TABLE payments (
    id             uuid        PRIMARY KEY,
    tenant_id      text        NOT NULL,
    -- A key-share lock on the order when a payment is inserted, which the insert's own FOR SHARE covers.
    order_id       uuid        NOT NULL REFERENCES orders (id),
    status         text        NOT NULL
        CONSTRAINT payments_status_check CHECK (status IN ('pending', 'succeeded', 'failed')),
    -- The order's total when the payment was asked for (an order's total never changes once confirmed).
    amount_cents   integer     NOT NULL
        CONSTRAINT payments_amount_cents_check CHECK (amount_cents > 0),
    -- What the provider said when the payment failed; only a failed payment has one.
    failure_reason text
        CONSTRAINT payments_failure_reason_check
            CHECK ((status = 'failed' OR failure_reason IS NULL) AND char_length(failure_reason) <= 200),
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);

-- At most one payment per order that is pending or succeeded: the 409 payment_exists, also between two
-- concurrent requests (the second one's insert waits for the first and then does nothing).
CREATE UNIQUE INDEX payments_order_open_key ON payments (order_id) WHERE status IN ('pending', 'succeeded');

-- Serves GET /orders/{id}/payments: tenant and order, then the sort, so the list is one index range scan.
CREATE INDEX payments_tenant_order_idx ON payments (tenant_id, order_id, created_at DESC, id DESC);

-- Events and the outbox's UNIQUE (order_id, event_type). An order asks for a payment only while confirmed and
-- without a pending or succeeded one, and a failed payment cancels its order (or finds it cancelled or closed
-- already), which never becomes confirmed again: so an order asks at most once, and `payments.requested` is
-- once per order as the constraint says. Only that one payment can succeed, so `orders.paid` and
-- `payments.refund_required` (a success for an order cancelled meanwhile) are once per order too. The events
-- carry the order's version at the time: requested and refund_required that of the order as it stands, paid
-- the new one, so the relay keeps them in the order's own order.

-- Provider deliveries seen, by their `webhook-id` (Standard Webhooks: the same id on every retry of one
-- event), with the answer given: a retry gets that answer again and changes nothing. Claimed (inserted) first
-- in the transaction that settles the payment, so concurrent copies of one delivery wait for it and then find
-- its answer; a refused delivery rolls back and leaves no row. Kept for ORDERS_WEBHOOK_RETENTION_HOURS
-- (default 168: senders retry for about three days), then purged by housekeeping.
CREATE TABLE webhook_deliveries (
    id              text        PRIMARY KEY
        CONSTRAINT webhook_deliveries_id_check CHECK (char_length(id) BETWEEN 1 AND 255),
    received_at     timestamptz NOT NULL DEFAULT now(),
    response_status smallint,
    response_body   bytea
);

-- Housekeeping deletes deliveries past the retention, oldest first, in small batches.
CREATE INDEX webhook_deliveries_received_idx ON webhook_deliveries (received_at);
