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

-- name: claim_expired_idempotency_key
-- claim_idempotency_key for a key found expired: takes key $2 of tenant $1 over atomically (locks it, re-checks
-- expiry) for fingerprint $3 and lifetime $4.
INSERT INTO idempotency_keys AS k (tenant_id, key, fingerprint, created_at, expires_at)
VALUES ($1, $2, $3, now(), now() + $4::interval)
ON CONFLICT (tenant_id, key) DO UPDATE
    SET fingerprint = EXCLUDED.fingerprint,
        response_status = NULL,
        response_headers = NULL,
        response_body = NULL,
        created_at = EXCLUDED.created_at,
        expires_at = EXCLUDED.expires_at
    WHERE k.expires_at <= now()
RETURNING 1;

-- name: store_idempotent_response
-- Stores response status $3, headers $4 and body $5 on the key $2 of tenant $1 claimed in this transaction.
UPDATE idempotency_keys
SET response_status = $3, response_headers = $4, response_body = $5
WHERE tenant_id = $1 AND key = $2;
