-- name: select_idempotency_key
-- The live (unexpired) key $2 of tenant $1 with its fingerprint and stored response.
SELECT fingerprint, response_status, response_headers, response_body
FROM idempotency_keys
WHERE tenant_id = $1 AND key = $2 AND expires_at > now();

-- name: claim_idempotency_key
-- Claims key $2 of tenant $1 for a request with fingerprint $3 for lifetime $4. Waits for a concurrent holder to
-- finish; no row back means the key exists. DO NOTHING leaves it untouched (no lock, no write): replays read.
INSERT INTO idempotency_keys (tenant_id, key, fingerprint, created_at, expires_at)
VALUES ($1, $2, $3, now(), now() + $4::interval)
ON CONFLICT (tenant_id, key) DO NOTHING
RETURNING 1;

-- name: drop_expired_idempotency_key
-- Removes key $2 of tenant $1 if its lifetime is over, so that the next claim takes it over. Locks the row: of
-- two requests taking the same expired key over, the second finds it gone and then waits on the first's claim.
DELETE FROM idempotency_keys
WHERE tenant_id = $1 AND key = $2 AND expires_at <= now();

-- name: store_idempotent_response
-- Stores response status $3, headers $4 and body $5 on the key $2 of tenant $1 claimed in this transaction.
UPDATE idempotency_keys
SET response_status = $3, response_headers = $4, response_body = $5
WHERE tenant_id = $1 AND key = $2;

-- name: purge_expired_idempotency_keys
-- Deletes at most $1 expired idempotency keys, oldest first. A key taken over meanwhile (expires_at moved into
-- the future) is re-checked by the outer WHERE and kept.
DELETE FROM idempotency_keys AS k
USING (
    SELECT tenant_id, key
    FROM idempotency_keys
    WHERE expires_at <= now()
    ORDER BY expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
) AS expired
WHERE k.tenant_id = expired.tenant_id AND k.key = expired.key AND k.expires_at <= now();

-- name: select_idempotency_key_record
-- Key $2 of tenant $1 as an operator sees it, expired or not: when it was stored, until when it replays, and
-- the stored response (status NULL: the first request with it is still in progress).
SELECT created_at, expires_at, expires_at <= now() AS expired, response_status, response_body
FROM idempotency_keys
WHERE tenant_id = $1 AND key = $2;

-- name: forget_idempotency_key
-- Deletes key $2 of tenant $1, so that the next request with it runs as a new one. Waits for a request holding
-- the key to finish first (the row lock). Returns the deleted key's created_at.
DELETE FROM idempotency_keys
WHERE tenant_id = $1 AND key = $2
RETURNING created_at;
