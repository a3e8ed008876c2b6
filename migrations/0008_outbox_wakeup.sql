-- No lost wake-up: a commit that skips the NOTIFY can always be waited for by a relay about to go idle.
-- depends: 0007_products

-- 0005 skips the NOTIFY when an older event is pending, counting on the relay that drains it to claim again.
-- But the check runs before the commit: the relay could publish that older event, claim again before this
-- commit (seeing nothing) and go to sleep until its next poll. So each inserting transaction now holds an
-- advisory lock keyed by its backend (no two transactions contend for it) from before its check until its
-- commit, and a relay that ends a drain first waits on every such lock it finds in pg_locks (outbox.sql,
-- wait_for_outbox_writers), then claims once more: a transaction that skipped the NOTIFY has then committed and
-- its event is claimed, or it began its check after that wait and saw an older event that this or another
-- relay has yet to settle (and that relay in turn waits for it before going idle).
-- An older event that waits out a backoff is nobody's to drain: the check only skips for one that is due.
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    -- Before the check (each statement of this function reads with a new snapshot), held until commit.
    PERFORM pg_advisory_xact_lock(hashtext('orders_outbox'), pg_backend_pid());
    -- The oldest pending event, read from the front of outbox_pending_idx (one index entry, however long
    -- the backlog), against this statement's own rows. A pending event that ties with or is newer than ours,
    -- or is backing off, is not counted, and we notify: the check errs towards waking the relays.
    IF NOT EXISTS (
        SELECT 1
        FROM (
            SELECT created_at, next_attempt_at
            FROM outbox
            WHERE published_at IS NULL AND dead_at IS NULL
            ORDER BY created_at, id
            LIMIT 1
        ) AS oldest
        WHERE oldest.created_at < (SELECT min(created_at) FROM inserted)
          AND (oldest.next_attempt_at IS NULL OR oldest.next_attempt_at <= now())
    ) THEN
        PERFORM pg_notify('orders_outbox', '');
    END IF;
    RETURN NULL;
END;
$$;
