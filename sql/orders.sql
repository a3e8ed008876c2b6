-- The order's statements. Every one is scoped by tenant $1; every write is one guarded statement whose WHERE is
-- the whole check (status and, when sent, version), so a concurrent change can never slip in between.
-- Timestamps of the representation come from the service's clock (one clock: the response is rendered before
-- the statement that stores it), never earlier than the row's own (another instance's clock may lag).

-- name: create_order
-- Fast path of an idempotent create: claims key $2 of tenant $1 (fingerprint $3, lifetime $7) storing response
-- $4/$5, and inserts draft order $6 created at $8 - one statement. No row back: the key exists (after waiting
-- for a concurrent claim of it to end). DO NOTHING leaves an existing key untouched (no lock, no write): a
-- replay only reads. Same claim as idempotency.sql's claim_idempotency_key, with the response stored at once.
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

-- name: select_order
-- The order $2 of tenant $1.
SELECT id, tenant_id, status, version, total_cents, created_at, updated_at
FROM orders
WHERE tenant_id = $1 AND id = $2;

-- name: confirm_order
-- draft -> confirmed with total $4 at $5 for order $2 of tenant $1, only at a version in $3 (NULL = If-Match: *).
UPDATE orders
SET status = 'confirmed', total_cents = $4, version = version + 1, updated_at = greatest($5, updated_at)
WHERE tenant_id = $1 AND id = $2 AND status = 'draft' AND ($3::int[] IS NULL OR version = ANY ($3::int[]))
RETURNING id, tenant_id, status, version, total_cents, created_at, updated_at;

-- name: close_order
-- confirmed -> closed at $5 for order $2 of tenant $1 at a version in $3 (NULL = any), plus outbox event $4
-- orders.closed, atomically.
WITH closed AS (
    UPDATE orders
    SET status = 'closed', version = version + 1, updated_at = greatest($5, updated_at)
    WHERE tenant_id = $1 AND id = $2 AND status = 'confirmed'
      AND ($3::int[] IS NULL OR version = ANY ($3::int[]))
    RETURNING id, tenant_id, status, version, total_cents, created_at, updated_at
), event AS (
    INSERT INTO outbox (id, event_type, order_id, order_version, tenant_id, created_at, payload)
    SELECT $4, 'orders.closed', id, version, tenant_id, updated_at, jsonb_build_object(
        'orderId', id, 'tenantId', tenant_id, 'totalCents', total_cents, 'closedAt', rfc3339(updated_at))
    FROM closed
)
SELECT * FROM closed;

-- name: cancel_order
-- draft | confirmed -> cancelled at $6 for order $2 of tenant $1 at a version in $3 (NULL = any), plus outbox
-- event $4 orders.cancelled with reason $5 (NULL when none was given), atomically.
WITH cancelled AS (
    UPDATE orders
    SET status = 'cancelled', version = version + 1, updated_at = greatest($6, updated_at)
    WHERE tenant_id = $1 AND id = $2 AND status IN ('draft', 'confirmed')
      AND ($3::int[] IS NULL OR version = ANY ($3::int[]))
    RETURNING id, tenant_id, status, version, total_cents, created_at, updated_at
), event AS (
    INSERT INTO outbox (id, event_type, order_id, order_version, tenant_id, created_at, payload)
    SELECT $4, 'orders.cancelled', id, version, tenant_id, updated_at, jsonb_build_object(
        'orderId', id, 'tenantId', tenant_id, 'reason', $5::text, 'cancelledAt', rfc3339(updated_at))
    FROM cancelled
)
SELECT * FROM cancelled;

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
