-- name: ping
-- Readiness probe: proves a pooled connection can run a statement.
SELECT 1;
