-- The catalogue's statements. Every one is scoped by tenant $1; every change is one guarded statement whose
-- WHERE is the whole check (version when If-Match is sent; the stock's bounds), and adds 1 to the version.
-- Timestamps come from the service's clock, never earlier than the row's own (another instance's may lag).

-- name: insert_product
-- Product $2 of tenant $1: sku $3, name $4, price $5, stock $6, active $7, created at $8. A taken sku breaks
-- products_tenant_sku_key.
INSERT INTO products (id, tenant_id, sku, name, price_cents, stock, active, version, created_at, updated_at)
VALUES ($2, $1, $3, $4, $5, $6, $7, 1, $8, $8)
RETURNING id, tenant_id, sku, name, price_cents, stock, active, version, created_at, updated_at;

-- name: select_product
-- The product $2 of tenant $1.
SELECT id, tenant_id, sku, name, price_cents, stock, active, version, created_at, updated_at
FROM products
WHERE tenant_id = $1 AND id = $2;

-- name: update_product
-- Name $4, price $5 and active $6 (each NULL: unchanged) at $7 for product $2 of tenant $1, only at a version
-- in $3 (NULL = If-Match: *).
UPDATE products
SET name = coalesce($4, name), price_cents = coalesce($5, price_cents), active = coalesce($6, active),
    version = version + 1, updated_at = greatest($7, updated_at)
WHERE tenant_id = $1 AND id = $2 AND ($3::int[] IS NULL OR version = ANY ($3::int[]))
RETURNING id, tenant_id, sku, name, price_cents, stock, active, version, created_at, updated_at;

-- name: change_stock
-- Adds $3 (bigint, never 0) to the stock of product $2 of tenant $1 at $4, only while the result stays within
-- 0..2147483647: the bounds are compared before the sum is made, so no value of $3 overflows.
UPDATE products
SET stock = stock + $3::bigint, version = version + 1, updated_at = greatest($4, updated_at)
WHERE tenant_id = $1 AND id = $2 AND $3::bigint BETWEEN -stock AND 2147483647 - stock
RETURNING id, tenant_id, sku, name, price_cents, stock, active, version, created_at, updated_at;

-- name: list_products_first
-- The newest $3 products of tenant $1, only those whose active is $2 unless $2 is NULL (callers pass page
-- size + 1 to learn whether another page follows).
SELECT id, tenant_id, sku, name, price_cents, stock, active, version, created_at, updated_at
FROM products
WHERE tenant_id = $1 AND ($2::boolean IS NULL OR active = $2::boolean)
ORDER BY created_at DESC, id DESC
LIMIT $3;

-- name: list_products_after
-- The next $5 products of tenant $1 (active = $2 unless $2 is NULL) strictly after keyset position
-- ($3 created_at, $4 id), newest first.
SELECT id, tenant_id, sku, name, price_cents, stock, active, version, created_at, updated_at
FROM products
WHERE tenant_id = $1 AND ($2::boolean IS NULL OR active = $2::boolean) AND (created_at, id) < ($3, $4)
ORDER BY created_at DESC, id DESC
LIMIT $5;
