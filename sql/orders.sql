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

-- name: select_lines
-- The products $2 of tenant $1 as an order's lines would copy them (sku, name, price), with whether each is for
-- sale; a product unknown to the tenant is missing. A plain read: the stock is taken by create_order_with_items.
SELECT id, sku, name, price_cents, active
FROM products
WHERE tenant_id = $1 AND id = ANY ($2::uuid[]);

-- name: create_order_with_items
-- Fast path of an idempotent create with lines, one statement: unless key $2 of tenant $1 exists, queues behind
-- other creates of products $16 (when $17, whether or not the key exists), locks products $10 (quantities $11)
-- in id order and, if every one is active, has the stock and still has the sku $13, name $14 and price $12 the
-- response was rendered with, claims the key (fingerprint $3, lifetime $7) storing response $4/$5, takes the
-- stock, and inserts draft order $6 (total $15, created at $8, reserved until $9) with its lines. Returns
-- whether the key was new, whether it was claimed, each locked product as found (stock, active, and the sku,
-- name and price an order would copy), and the order's id.
-- Alone, it queues on its own products ($16 = $10, $17 false). Several in one transaction (one round trip:
-- db.Database.batched) would each take their products in their own id order, one after another, and two such
-- transactions could wait on each other: the first queues on the products of all of them ($16, $17 true), the
-- others on none ($16 empty), so every transaction that locks several products takes all their queue places
-- in key order, in one statement, before any row (give_stock_back queues too).
-- The product rows are held only while this statement (or its batch) and the commit run: no round trip of the
-- client's.
-- The queue: creates wait for a product on a transaction-scoped advisory lock (key: the product id's hash),
-- taken for all the products in key order before any row: one waiter wakes at each commit. Waiting on the row
-- itself, every commit woke each waiter in turn (each row version is a new lock to queue on): with 32 buyers of
-- one product, ~90 context switches and ~1.7 ms of database CPU per order instead of ~20 and ~1.0 ms. Rows are
-- still locked in id order after the queue (restocks and edits lock one row without queueing).
-- Each step is a node or two of the plan: every execution builds the executor state of the whole plan anew,
-- so a join that is not needed costs on every order (bench/README: a join per step took 14 % more CPU).
WITH wanted AS (
    SELECT *
    FROM unnest($10::uuid[], $11::int[], $12::int[], $13::text[], $14::text[]) WITH ORDINALITY
        AS w (product_id, quantity, price_cents, sku, name, line)
), fresh AS (
    SELECT NOT EXISTS (SELECT 1 FROM idempotency_keys WHERE tenant_id = $1 AND key = $2) AS yes
), queued AS (
    SELECT count(pg_advisory_xact_lock(hashtext('orders_products'), q.k)) AS products, (SELECT yes FROM fresh)
    FROM (
        SELECT uuid_hash(u.id) AS k
        FROM unnest($16::uuid[]) AS u (id)
        WHERE $17::boolean OR (SELECT yes FROM fresh)
        ORDER BY k
    ) AS q
), locked AS (
    SELECT p.id, p.stock, p.active, w.quantity, p.sku, p.name, p.price_cents,
           p.active AND p.stock >= w.quantity AND (p.price_cents, p.sku, p.name) = (w.price_cents, w.sku, w.name)
               AS ok
    FROM products AS p
    JOIN wanted AS w ON w.product_id = p.id
    WHERE p.tenant_id = $1 AND p.id = ANY ($10::uuid[]) AND (SELECT yes FROM queued)
    ORDER BY p.id
    FOR NO KEY UPDATE OF p
), claim AS (
    INSERT INTO idempotency_keys
        (tenant_id, key, fingerprint, response_status, response_headers, response_body, created_at, expires_at)
    SELECT $1, $2, $3, 201, $4, $5, now(), now() + $7::interval
    WHERE (SELECT count(*) FILTER (WHERE ok) FROM locked) = cardinality($10::uuid[])
    ON CONFLICT (tenant_id, key) DO NOTHING
    RETURNING 1
), taken AS (
    UPDATE products AS p
    SET stock = p.stock - ($11::int[])[array_position($10::uuid[], p.id)], version = p.version + 1,
        updated_at = greatest($8, p.updated_at)
    WHERE p.tenant_id = $1 AND p.id = ANY ($10::uuid[]) AND EXISTS (SELECT 1 FROM claim)
), placed AS (
    INSERT INTO orders (id, tenant_id, status, version, total_cents, created_at, updated_at, reserved_until)
    SELECT $6, $1, 'draft', 1, $15, $8, $8, $9 FROM claim
    RETURNING id
), items AS (
    INSERT INTO order_items (order_id, line, tenant_id, product_id, sku, name, unit_price_cents, quantity)
    SELECT placed.id, w.line, $1, w.product_id, w.sku, w.name, w.price_cents, w.quantity
    FROM placed CROSS JOIN wanted AS w
)
SELECT (SELECT yes FROM fresh), EXISTS (SELECT 1 FROM claim), l.id, l.stock, l.active, l.quantity,
       l.sku, l.name, l.price_cents, $6::uuid
FROM (SELECT 1) AS one
LEFT JOIN locked AS l ON true;

-- name: select_order_items
-- The lines of orders $2 of tenant $1, by order and line.
SELECT order_id, product_id, sku, name, unit_price_cents, quantity
FROM order_items
WHERE tenant_id = $1 AND order_id = ANY ($2::uuid[])
ORDER BY order_id, line;

-- name: select_order
-- The order $2 of tenant $1.
SELECT id, tenant_id, status, version, total_cents, created_at, updated_at, reserved_until
FROM orders
WHERE tenant_id = $1 AND id = $2;

-- name: confirm_order
-- draft -> confirmed at $5 for order $2 of tenant $1, only at a version in $3 (NULL = If-Match: *). An order
-- without lines takes total $4; an order with lines keeps the total of its lines, which $4 may repeat.
UPDATE orders
SET status = 'confirmed', total_cents = coalesce($4, total_cents), version = version + 1,
    updated_at = greatest($5, updated_at)
WHERE tenant_id = $1 AND id = $2 AND status = 'draft' AND ($3::int[] IS NULL OR version = ANY ($3::int[]))
  AND CASE WHEN reserved_until IS NULL THEN $4::int IS NOT NULL ELSE $4::int IS NULL OR $4::int = total_cents END
RETURNING id, tenant_id, status, version, total_cents, created_at, updated_at, reserved_until;

-- name: transition_order
-- Order $2 of tenant $1, at a version in $3 (NULL = any), from a status in $4 to status $5 at $7, plus its outbox
-- event $6 `orders.<new status>`, atomically: close and cancel. The guard's statuses are the transition's
-- sources in states.py, passed by every caller; the payload is the one its event type has (the contract's
-- "Events"), $8 being a cancellation's reason (NULL when none was given). A cancelled order with lines then
-- gives their stock back in the same transaction (sql/stock.sql's give_stock_back, after this statement locked
-- the order's row): every cancellation is queries.orders.cancel_order.
WITH moved AS (
    UPDATE orders
    SET status = $5, version = version + 1, updated_at = greatest($7, updated_at)
    WHERE tenant_id = $1 AND id = $2 AND status = ANY ($4::text[])
      AND ($3::int[] IS NULL OR version = ANY ($3::int[]))
    RETURNING id, tenant_id, status, version, total_cents, created_at, updated_at, reserved_until
), event AS (
    INSERT INTO outbox (id, event_type, order_id, order_version, tenant_id, created_at, payload)
    SELECT $6, 'orders.' || status, id, version, tenant_id, updated_at,
        jsonb_build_object('orderId', id, 'tenantId', tenant_id) || CASE status
            WHEN 'closed' THEN jsonb_build_object('totalCents', total_cents, 'closedAt', rfc3339(updated_at))
            WHEN 'cancelled' THEN jsonb_build_object('reason', $8::text, 'cancelledAt', rfc3339(updated_at))
        END
    FROM moved
)
SELECT * FROM moved;

-- name: list_orders_first
-- The newest $2 orders of tenant $1 (callers pass page size + 1 to learn whether another page follows).
SELECT id, tenant_id, status, version, total_cents, created_at, updated_at, reserved_until
FROM orders
WHERE tenant_id = $1
ORDER BY created_at DESC, id DESC
LIMIT $2;

-- name: list_orders_after
-- The next $4 orders of tenant $1 strictly after keyset position ($2 created_at, $3 id), newest first.
SELECT id, tenant_id, status, version, total_cents, created_at, updated_at, reserved_until
FROM orders
WHERE tenant_id = $1 AND (created_at, id) < ($2, $3)
ORDER BY created_at DESC, id DESC
LIMIT $4;
