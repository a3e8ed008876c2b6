-- Edge-triggered outbox NOTIFY: wake the relays only when a commit turns an idle outbox into a pending one.
-- depends: 0004_outbox_relay

-- PostgreSQL serialises the commits of all transactions that sent a NOTIFY (they share one queue lock), so a
-- notification per close caps concurrent closes at a fraction of concurrent confirms. While other events are
-- pending, a relay is either draining them (it claims again as soon as a batch is done) or waiting out a backoff
-- and polling: nobody needs waking. Skipping the NOTIFY then is safe because it was only ever a hint; the worst
-- case, a relay going idle in the instant between this check and the commit, is covered by its polling.
-- Dead-lettered rows do not count: they wait for an operator, not for a relay.
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1
        FROM outbox AS pending
        WHERE pending.published_at IS NULL
          AND pending.dead_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM inserted WHERE inserted.id = pending.id)
    ) THEN
        PERFORM pg_notify('orders_outbox', '');
    END IF;
    RETURN NULL;
END;
$$;

-- The transition table lets the check tell this statement's own new rows from events pending before it.
DROP TRIGGER outbox_notify_on_insert ON outbox;
CREATE TRIGGER outbox_notify_on_insert
    AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
