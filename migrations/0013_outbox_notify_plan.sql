-- The outbox's wake-up check reads the front of its index however the statistics of outbox stand.
-- depends: 0012_payments_hot_status

-- The check in outbox_notify (0008) has no parameters: a session plans it once, on its first event, and keeps
-- that plan until the statistics of outbox change. Planned while the outbox was empty or nearly so (a fresh
-- deployment, a purge, an ANALYZE after the relay drained it), the plan was a sequential scan and a sort of the
-- whole table, and it stayed while a backlog grew behind those statistics: every event written then read the
-- whole outbox (webhooks/s halved in 15,000 deliveries, until autovacuum analyzed the table again). The function
-- now plans with sequential scans, bitmap scans and sorts off, which leaves the ordered scan of
-- outbox_pending_idx that stops at the first entry, whatever the table's size was when it was planned.
ALTER FUNCTION outbox_notify() SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off;
