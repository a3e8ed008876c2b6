-- Outbox relay bookkeeping: retries with backoff, dead letters, and a NOTIFY that wakes the relays on commit.
-- depends: 0002_outbox

-- All columns are nullable or have constant defaults, so adding them rewrites nothing on a large outbox.
ALTER TABLE outbox
    -- Failed publish attempts so far; at ORDERS_RELAY_MAX_ATTEMPTS the row is dead-lettered.
    ADD COLUMN attempts        integer     NOT NULL DEFAULT 0
        CONSTRAINT outbox_attempts_check CHECK (attempts >= 0),
    -- When the relay last tried to publish the row, and the last error (truncated, no credentials).
    ADD COLUMN last_attempt_at timestamptz,
    ADD COLUMN last_error      text,
    -- Not before this instant (exponential backoff with full jitter); NULL means due now.
    ADD COLUMN next_attempt_at timestamptz,
    -- Dead letter: never retried automatically, kept and visible until `orders-svc outbox retry-dead`.
    ADD COLUMN dead_at         timestamptz;

-- The claim query asks "is there an earlier unpublished event of this order?" for every candidate row: an
-- unpublished (or dead, which is also unpublished) earlier event holds the later ones back, keeping per-order order.
CREATE INDEX outbox_pending_order_idx ON outbox (order_id, order_version) WHERE published_at IS NULL;

-- Housekeeping deletes published rows past the retention period, oldest first, in small batches.
CREATE INDEX outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL;

-- NOTIFY is delivered at commit and dropped on rollback, so the close transaction itself wakes the relays,
-- with no change to the close statement. Statement-level: one notification per INSERT statement, not per row
-- (and PostgreSQL collapses identical ones within a transaction). It is only a hint: relays also poll, since
-- a relay that is not listening at commit time never sees it.
CREATE FUNCTION outbox_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orders_outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify_on_insert
    AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
