-- Outbox: events written in the same transaction as the state change they describe, relayed to the broker later.
-- depends: 0001_orders

CREATE TABLE outbox (
    id            uuid        PRIMARY KEY,                 -- the event id; consumers deduplicate on it
    event_type    text        NOT NULL,                    -- e.g. orders.closed; also the broker subject
    -- No foreign key to orders: the outbox is an append-only log that may outlive (or be purged before) the order.
    order_id      uuid        NOT NULL,
    -- The order's version after the change, so consumers can drop stale or out-of-order events.
    order_version integer     NOT NULL,
    tenant_id     text        NOT NULL,
    payload       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    -- An order closes once, so it has at most one close event: a second row would be a double publish.
    CONSTRAINT outbox_order_event_key UNIQUE (order_id, event_type)
);

-- The relay only ever looks at unpublished rows; a partial index stays small however long the history grows.
CREATE INDEX outbox_unpublished_idx ON outbox (created_at, id) WHERE published_at IS NULL;
