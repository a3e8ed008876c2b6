-- name: bound_relay_transaction
-- Ends this relay transaction (releasing its row locks) if it sits idle for more than $1 ms, e.g. a relay that
-- hangs while publishing: other relays then take its events over. Transaction-scoped.
SELECT set_config('idle_in_transaction_session_timeout', $1::text, true);

-- name: claim_outbox_batch
-- Locks up to $1 due events for this transaction, skipping rows other relays hold, at most one per order.
-- Per-order order: a row is only claimable when no earlier event of its order (by order_version, then creation)
-- is still unpublished - whether that one is locked by another relay, waiting out a backoff, or dead-lettered.
-- So concurrent relays never publish two events of one order out of order, and a failing event holds back the
-- later events of its order (never reordered), while other orders flow. Status-based, never `id > last_seen`.
SELECT o.id, o.event_type, o.order_id, o.order_version, o.tenant_id, o.payload, o.attempts, o.created_at,
    o.traceparent
FROM outbox AS o
WHERE o.published_at IS NULL
  AND o.dead_at IS NULL
  AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now())
  AND NOT EXISTS (
      SELECT 1
      FROM outbox AS earlier
      WHERE earlier.order_id = o.order_id
        AND earlier.published_at IS NULL
        AND (earlier.order_version, earlier.created_at, earlier.id) < (o.order_version, o.created_at, o.id)
  )
ORDER BY o.created_at, o.id
LIMIT $1
FOR UPDATE OF o SKIP LOCKED;

-- name: mark_outbox_published
-- Marks the events $1 (uuid[]) as published now; they are never claimed again.
UPDATE outbox
SET published_at = now(), last_attempt_at = now(), next_attempt_at = NULL
WHERE id = ANY ($1::uuid[]) AND published_at IS NULL;

-- name: record_outbox_failures
-- One more failed attempt for events $1 (uuid[]) with errors $2 (text[], parallel): retry after a random delay
-- in [0, min($4, $3 * 2^attempts)) seconds (exponential backoff, full jitter), dead-lettered at $5 attempts.
UPDATE outbox AS o
SET attempts = o.attempts + 1,
    last_attempt_at = now(),
    last_error = f.error,
    next_attempt_at = now()
        + random() * least($4::float8, $3::float8 * 2 ^ least(o.attempts, 40)) * interval '1 second',
    dead_at = CASE WHEN o.attempts + 1 >= $5::int THEN now() END
FROM unnest($1::uuid[], $2::text[]) AS f (id, error)
WHERE o.id = f.id AND o.published_at IS NULL
RETURNING o.id, o.attempts, o.dead_at IS NOT NULL AS dead;

-- name: retry_dead_outbox
-- Puts every dead-lettered event back in the queue with a fresh attempt budget and wakes the relays; no $n.
WITH revived AS (
    UPDATE outbox
    SET dead_at = NULL, attempts = 0, next_attempt_at = NULL
    WHERE dead_at IS NOT NULL AND published_at IS NULL
    RETURNING 1
)
SELECT count(*), pg_notify('orders_outbox', '') FROM revived;

-- name: purge_published_outbox
-- Deletes at most $2 events published more than $1 (interval) ago, oldest first; unpublished and dead rows stay.
DELETE FROM outbox
WHERE id IN (
    SELECT id
    FROM outbox
    WHERE published_at < now() - $1::interval
    ORDER BY published_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
);

-- name: wait_for_outbox_writers
-- Waits until every transaction that holds its outbox-insert lock (taken by the outbox_notify trigger before it
-- decides whether to NOTIFY, held until its commit) has ended, then lets go at once; no $n. A relay runs it
-- before going idle, so that an insert which skipped the NOTIFY is committed by the relay's last claim (see
-- migration 0008). Only those transactions are waited for; nobody ever waits for the relay here.
SELECT count(pg_advisory_xact_lock_shared(l.classid::int4, l.objid::int4))
FROM pg_locks AS l
WHERE l.locktype = 'advisory'
  AND l.objsubid = 2
  AND l.granted
  AND l.classid = hashtext('orders_outbox')::oid
  AND l.pid <> pg_backend_pid();

-- name: bound_lock_wait
-- Gives up a lock wait in this transaction after $1 ms (lock_timeout); transaction-scoped.
SELECT set_config('lock_timeout', $1::text, true);

-- name: outbox_status
-- Per event type, the undelivered events: pending (due now or backing off after a failure), dead-lettered, and
-- how long the oldest pending one has waited. Reads only the unpublished rows (a partial index); no $n.
SELECT event_type,
       count(*) FILTER (WHERE dead_at IS NULL) AS pending,
       count(*) FILTER (WHERE dead_at IS NULL AND next_attempt_at > now()) AS backing_off,
       count(*) FILTER (WHERE dead_at IS NOT NULL) AS dead,
       now() - min(created_at) FILTER (WHERE dead_at IS NULL) AS oldest_pending_age
FROM outbox
WHERE published_at IS NULL
GROUP BY event_type
ORDER BY event_type;

-- name: set_outbox_traceparent
-- Names $1 (a W3C traceparent) as the trace of the outbox events this session inserts next (outbox.traceparent
-- defaults to this setting: migration 0010). Session-scoped; set by every traced write; reads no table.
SELECT set_config('orders.traceparent', $1, false);

-- name: outbox_backlog
-- The backlog for /metrics: events pending (from outbox_pending_idx), dead-lettered, and the age in seconds
-- of the oldest pending one (the front of outbox_pending_idx; 0 when none); no $n.
SELECT
    (SELECT count(*) FROM outbox WHERE published_at IS NULL AND dead_at IS NULL) AS pending,
    (SELECT count(*) FROM outbox WHERE published_at IS NULL AND dead_at IS NOT NULL) AS dead,
    coalesce((
        SELECT extract(epoch FROM now() - created_at)::float8
        FROM outbox
        WHERE published_at IS NULL AND dead_at IS NULL
        ORDER BY created_at, id
        LIMIT 1
    ), 0) AS oldest_age_seconds;
