-- name: create_order
-- Claims idempotency key $2 for tenant $1 (fingerprint $3, lifetime $7) storing response $4/$5, and inserts draft
-- order $6 created at $8 — one statement, one transaction. No row back: the key exists (waiting first for a
-- concurrent claim of it to end). DO NOTHING leaves an existing key untouched - no lock, no write - so a replay
-- is read-only; an expired key is taken over by create_order_over_expired_key.
WITH claim AS (
    INSERT INTO idempotency_keys
        (tenant_id, key, fingerprint, response_status, response_headers, response_body, created_at, expires_at)
    VALUES ($1, $2, $3, 201, $4, $5, now(), now() + $7::interval)
    ON CONFLICT (tenant_id, key) DO NOTHING
    RETURNING 1
)
INSERT INTO orders (id, tenant_id, status, version, total_cents, created_at, updated_at)
SELECT $6, $1, 'draft', 1, NULL, $8, $8 FROM claim
RETURNING id;

-- name: create_order_over_expired_key
-- create_order for a key found expired: takes key $2 of tenant $1 over atomically (locks it, re-checks expiry),
-- with fingerprint $3, response $4/$5, order $6, lifetime $7 and created_at $8 as there.
WITH claim AS (
    INSERT INTO idempotency_keys AS k
        (tenant_id, key, fingerprint, response_status, response_headers, response_body, created_at, expires_at)
    VALUES ($1, $2, $3, 201, $4, $5, now(), now() + $7::interval)
    ON CONFLICT (tenant_id, key) DO UPDATE
        SET fingerprint = EXCLUDED.fingerprint,
            response_status = EXCLUDED.response_status,
            response_headers = EXCLUDED.response_headers,
            response_body = EXCLUDED.response_body,
            created_at = EXCLUDED.created_at,
            expires_at = EXCLUDED.expires_at
        WHERE k.expires_at <= now()
    RETURNING 1
)
INSERT INTO orders (id, tenant_id, status, version, total_cents, created_at, updated_at)
SELECT $6, $1, 'draft', 1, NULL, $8, $8 FROM claim
RETURNING id;

-- name: select_order
-- The order $2 of tenant $1.
SELECT id, tenant_id, status, version, total_cents, created_at, updated_at
FROM orders
WHERE tenant_id = $1 AND id = $2;

-- name: confirm_order
-- draft -> confirmed with total $4 for order $2 of tenant $1, only at a version in $3 (NULL = If-Match: *).
UPDATE orders
SET status = 'confirmed', total_cents = $4, version = version + 1, updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND status = 'draft' AND ($3::int[] IS NULL OR version = ANY ($3::int[]))
RETURNING id, tenant_id, status, version, total_cents, created_at, updated_at;

-- name: close_order
-- confirmed -> closed for order $2 of tenant $1 at a version in $3 (NULL = any), plus outbox event $4, atomically.
WITH closed AS (
    UPDATE orders
    SET status = 'closed', version = version + 1, updated_at = now()
    WHERE tenant_id = $1 AND id = $2 AND status = 'confirmed'
      AND ($3::int[] IS NULL OR version = ANY ($3::int[]))
    RETURNING id, tenant_id, status, version, total_cents, created_at, updated_at
), event AS (
    INSERT INTO outbox (id, event_type, order_id, order_version, tenant_id, payload, created_at)
    SELECT $4, 'orders.closed', id, version, tenant_id,
           jsonb_build_object(
               'orderId', id,
               'tenantId', tenant_id,
               'totalCents', total_cents,
               'closedAt', to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')),
           updated_at
    FROM closed
)
SELECT id, tenant_id, status, version, total_cents, created_at, updated_at FROM closed;

-- name: list_orders_first
-- The newest $2 orders of tenant $1 (callers pass page size + 1 to learn whether another page follows).
SELECT id, tenant_id, status, version, total_cents, created_at, updated_at
FROM orders
WHERE tenant_id = $1
ORDER BY created_at DESC, id DESC
LIMIT $2;

-- name: list_orders_after
-- The next $4 orders of tenant $1 strictly after keyset position ($2 created_at, $3 id), newest first.
SELECT id, tenant_id, status, version, total_cents, created_at, updated_at
FROM orders
WHERE tenant_id = $1 AND (created_at, id) < ($2, $3)
ORDER BY created_at DESC, id DESC
LIMIT $4;
