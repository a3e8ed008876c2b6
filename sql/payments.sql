-- Payments: asked for by a tenant's request, settled by the provider's webhook. The webhook's statements lock
-- the payment row first, then its order, then (giving stock back) the products in id order, as everywhere.
-- Once the payment and its order are locked, each settlement is one statement whose guards repeat what was
-- read under those locks; a settlement also stores the delivery's answer (webhook_deliveries).

-- name: create_payment
-- Payment $3 (pending, created at $5) for the total of order $2 of tenant $1, plus outbox event $4
-- payments.requested, in one statement; only while the order is confirmed with a total above 0 and has no
-- pending or succeeded payment. The order is share-locked, so it cannot change state before this commits.
-- No row back: the order was not in that state (a concurrent request that inserted first included).
WITH target AS (
    SELECT id, version, total_cents
    FROM orders
    WHERE tenant_id = $1 AND id = $2 AND status = 'confirmed' AND total_cents > 0
    FOR SHARE
), placed AS (
    INSERT INTO payments (id, tenant_id, order_id, status, amount_cents, created_at, updated_at)
    SELECT $3, $1, t.id, 'pending', t.total_cents, $5, $5
    FROM target AS t
    -- Read from the statement's snapshot, so a payment being settled right now is seen and never waited
    -- for (its webhook holds the payment and waits for this order's lock); ON CONFLICT covers a concurrent
    -- request's insert, which this one waits for and then leaves alone.
    WHERE NOT EXISTS (
        SELECT 1 FROM payments AS p
        WHERE p.tenant_id = $1 AND p.order_id = $2 AND p.status IN ('pending', 'succeeded')
    )
    ON CONFLICT (order_id) WHERE status IN ('pending', 'succeeded') DO NOTHING
    RETURNING id, tenant_id, order_id, status, amount_cents, failure_reason, created_at, updated_at
), requested AS (
    INSERT INTO outbox (id, event_type, order_id, order_version, tenant_id, created_at, payload)
    SELECT $4, 'payments.requested', p.order_id, t.version, $1, p.created_at, jsonb_build_object(
        'paymentId', p.id, 'orderId', p.order_id, 'tenantId', p.tenant_id, 'amountCents', p.amount_cents)
    FROM placed AS p JOIN target AS t ON t.id = p.order_id
)
SELECT * FROM placed;

-- name: select_payment
-- The payment $2 of tenant $1.
SELECT id, tenant_id, order_id, status, amount_cents, failure_reason, created_at, updated_at
FROM payments
WHERE tenant_id = $1 AND id = $2;

-- name: select_open_payment
-- The pending or succeeded payment of order $2 of tenant $1, if any.
SELECT id, tenant_id, order_id, status, amount_cents, failure_reason, created_at, updated_at
FROM payments
WHERE tenant_id = $1 AND order_id = $2 AND status IN ('pending', 'succeeded');

-- name: list_order_payments
-- Whether order $2 of tenant $1 exists, with its payments newest first (one row of NULLs when it has none).
SELECT o.id, p.id, p.tenant_id, p.order_id, p.status, p.amount_cents, p.failure_reason, p.created_at,
       p.updated_at
FROM orders AS o
LEFT JOIN payments AS p ON p.tenant_id = o.tenant_id AND p.order_id = o.id
WHERE o.tenant_id = $1 AND o.id = $2
ORDER BY p.created_at DESC, p.id DESC;

-- name: claim_webhook_delivery
-- The provider's delivery $1 of a settlement of payment $2, across tenants: claims the delivery id (waiting
-- for a concurrent claim of it to end) and, when it was new, locks the payment and then its order. Returns
-- whether it was new, the payment, and its order's status and version as they are now (a lock waited for
-- returns the row as its holder left it).
WITH claim AS (
    INSERT INTO webhook_deliveries (id, received_at)
    VALUES ($1, now())
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), payment AS (
    SELECT id, tenant_id, order_id, status, amount_cents, failure_reason, created_at, updated_at
    FROM payments
    WHERE id = $2 AND EXISTS (SELECT 1 FROM claim)
    FOR NO KEY UPDATE
)
SELECT EXISTS (SELECT 1 FROM claim), p.id, p.tenant_id, p.order_id, p.status, p.amount_cents, p.failure_reason,
       p.created_at, p.updated_at, o.status, o.version
FROM (SELECT 1) AS one
LEFT JOIN payment AS p ON true
LEFT JOIN LATERAL (
    SELECT status, version
    FROM orders
    WHERE tenant_id = p.tenant_id AND id = p.order_id
    FOR NO KEY UPDATE
) AS o ON true;

-- name: select_webhook_delivery
-- The answer stored for delivery $1 (none while its claim is not committed, or when it was purged).
SELECT response_status, response_body
FROM webhook_deliveries
WHERE id = $1 AND response_status IS NOT NULL;

-- name: answer_webhook_delivery
-- Stores answer $2 (status 200) for delivery $1, claimed in this transaction: a settlement that changed nothing.
UPDATE webhook_deliveries
SET response_status = 200, response_body = $2
WHERE id = $1;

-- name: pay_order
-- confirmed -> paid at $5 for order $2 of tenant $1, its pending payment $3 succeeded at $5, outbox event $4
-- orders.paid, and answer $7 stored for delivery $6, in one statement.
WITH paid AS (
    UPDATE orders
    SET status = 'paid', version = version + 1, updated_at = greatest($5, updated_at)
    WHERE tenant_id = $1 AND id = $2 AND status = 'confirmed'
      AND EXISTS (SELECT 1 FROM payments WHERE tenant_id = $1 AND id = $3 AND order_id = $2 AND status = 'pending')
    RETURNING id, tenant_id, version, updated_at
), settled AS (
    UPDATE payments AS p
    SET status = 'succeeded', updated_at = $5
    FROM paid
    WHERE p.tenant_id = $1 AND p.id = $3 AND p.order_id = paid.id AND p.status = 'pending'
    RETURNING p.id, p.amount_cents
), event AS (
    INSERT INTO outbox (id, event_type, order_id, order_version, tenant_id, created_at, payload)
    SELECT $4, 'orders.paid', paid.id, paid.version, $1, paid.updated_at, jsonb_build_object(
        'orderId', paid.id, 'tenantId', paid.tenant_id, 'paymentId', s.id, 'amountCents', s.amount_cents,
        'paidAt', rfc3339(paid.updated_at))
    FROM paid CROSS JOIN settled AS s
), answered AS (
    UPDATE webhook_deliveries AS d
    SET response_status = 200, response_body = $7
    FROM settled
    WHERE d.id = $6
)
SELECT count(*) FROM settled;

-- name: cancel_unpaid_order
-- The compensation of a failed payment: confirmed -> cancelled at $5 for order $2 of tenant $1, its pending
-- payment $3 failed at $5 with reason $6, outbox event $4 orders.cancelled (reason payment_failed), and answer
-- $8 stored for delivery $7, in one statement. Its stock goes back by return_stock in the same transaction.
WITH cancelled AS (
    UPDATE orders
    SET status = 'cancelled', version = version + 1, updated_at = greatest($5, updated_at)
    WHERE tenant_id = $1 AND id = $2 AND status = 'confirmed'
      AND EXISTS (SELECT 1 FROM payments WHERE tenant_id = $1 AND id = $3 AND order_id = $2 AND status = 'pending')
    RETURNING id, tenant_id, version, updated_at, reserved_until
), failed AS (
    UPDATE payments AS p
    SET status = 'failed', failure_reason = $6, updated_at = $5
    FROM cancelled
    WHERE p.tenant_id = $1 AND p.id = $3 AND p.order_id = cancelled.id AND p.status = 'pending'
    RETURNING p.id
), event AS (
    INSERT INTO outbox (id, event_type, order_id, order_version, tenant_id, created_at, payload)
    SELECT $4, 'orders.cancelled', c.id, c.version, $1, c.updated_at, jsonb_build_object(
        'orderId', c.id, 'tenantId', c.tenant_id, 'reason', 'payment_failed', 'cancelledAt', rfc3339(c.updated_at))
    FROM cancelled AS c CROSS JOIN failed
), answered AS (
    UPDATE webhook_deliveries AS d
    SET response_status = 200, response_body = $8
    FROM failed
    WHERE d.id = $7
)
SELECT c.reserved_until IS NOT NULL FROM cancelled AS c CROSS JOIN failed;

-- name: settle_payment
-- Pending payment $2 of tenant $1 -> status $3 (reason $4) at $5 while its order $6 (at version $7) stays as it
-- is; with event type $8 (payments.refund_required, or NULL for none) as outbox event $9; and answer $11
-- stored for delivery $10, in one statement.
WITH settled AS (
    UPDATE payments
    SET status = $3, failure_reason = $4, updated_at = $5
    WHERE tenant_id = $1 AND id = $2 AND order_id = $6 AND status = 'pending'
    RETURNING id, tenant_id, order_id, amount_cents
), event AS (
    INSERT INTO outbox (id, event_type, order_id, order_version, tenant_id, created_at, payload)
    SELECT $9, $8, s.order_id, $7, $1, $5, jsonb_build_object(
        'paymentId', s.id, 'orderId', s.order_id, 'tenantId', s.tenant_id, 'amountCents', s.amount_cents)
    FROM settled AS s
    WHERE $8::text IS NOT NULL
), answered AS (
    UPDATE webhook_deliveries AS d
    SET response_status = 200, response_body = $11
    FROM settled
    WHERE d.id = $10
)
SELECT count(*) FROM settled;

-- name: purge_webhook_deliveries
-- Deletes at most $2 deliveries received more than $1 (interval) ago, oldest first.
DELETE FROM webhook_deliveries
WHERE id IN (
    SELECT id
    FROM webhook_deliveries
    WHERE received_at < now() - $1::interval
    ORDER BY received_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
);

-- name: select_payment_amount
-- The amount of payment $1, across tenants: what the fake provider (orders-svc fake-provider settle) was
-- asked for, when its command line does not say.
SELECT amount_cents
FROM payments
WHERE id = $1;
