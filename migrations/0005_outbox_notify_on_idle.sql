-- Edge-triggered outbox NOTIFY: wake the relays only when a commit turns an idle outbox into a pending one.
-- depends: 0004_outbox_relay

-- PostgreSQL serialises the commits of all transactions that sent a NOTIFY (they share one queue lock), so a
-- notification per close caps concurrent closes at a fraction of concurrent confirms. While other events are
-- pending, a relay is either draining them (it claims again as soon as a batch is done) or waiting out a backoff
-- and polling: nobody needs waking. Skipping the NOTIFY then is safe because it was only ever a hint; the worst
-- case, a relay going idle in the instant between this check and the commit, is covered by its polling.
-- Dead-lettered rows do not count: they wait for an operator, not for a relay.
-- The events a relay may still publish, oldest first. Its predicate is exactly the one the check below and the
-- relay's claim use, so the planner reads it in order and stops at the first entry: an index whose predicate
-- needed a further filter on dead_at made it sort the whole backlog (while statistics lagged a fast-growing
-- outbox, the bitmap plan it chose cost milliseconds per close). It replaces outbox_unpublished_idx.
CREATE INDEX outbox_pending_idx ON outbox (created_at, id) WHERE published_at IS NULL AND dead_at IS NULL;
DROP INDEX outbox_unpublished_idx;

CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    -- The oldest pending event, read from the front of outbox_pending_idx (one index entry, however long
    -- the backlog), against this statement's own rows. A pending event that ties with
    -- or is newer than ours is not seen, and we notify: the check errs towards waking the relays.
    IF NOT EXISTS (
        SELECT 1
        FROM (
            SELECT created_at
            FROM outbox
            WHERE published_at IS NULL AND dead_at IS NULL
            ORDER BY created_at, id
            LIMIT 1
        ) AS oldest
        WHERE oldest.created_at < (SELECT min(created_at) FROM inserted)
    ) THEN
        PERFORM pg_notify('orders_outbox', '');
    END IF;
    RETURN NULL;
END;
$$;

-- The transition table lets the check tell this statement's own new rows from events pending before them.
DROP TRIGGER outbox_notify_on_insert ON outbox;
CREATE TRIGGER outbox_notify_on_insert
    AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
