-- Stock moves between products and orders. Product rows are always locked in id order (a locking SELECT
-- with ORDER BY locks as it returns rows), so two orders over the same products, listed in any order, never
-- deadlock; and an order's own row, when it is locked too, is locked before its products.

-- name: return_stock
-- Gives the quantities of the lines of orders $2 of tenant $1 back to their products at $3, rows locked in id
-- order. Run in the transaction that cancels those orders.
WITH returned AS (
    SELECT product_id, sum(quantity) AS quantity
    FROM order_items
    WHERE tenant_id = $1 AND order_id = ANY ($2::uuid[])
    GROUP BY product_id
), locked AS (
    SELECT id
    FROM products
    WHERE tenant_id = $1 AND id IN (SELECT product_id FROM returned)
    ORDER BY id
    FOR NO KEY UPDATE
)
UPDATE products AS p
SET stock = p.stock + r.quantity, version = p.version + 1, updated_at = greatest($3, p.updated_at)
FROM returned AS r JOIN locked AS l ON l.id = r.product_id
WHERE p.tenant_id = $1 AND p.id = ANY (ARRAY(SELECT id FROM locked)) AND p.id = l.id;

-- name: expire_reservations
-- Housekeeping, across tenants: cancels up to $1 orders with lines still draft or confirmed whose reservation
-- ended before $2 (the service's clock), skipping orders another process holds, and writes their
-- orders.cancelled events (reason reservation_expired). Returns the cancelled orders' ids by tenant, for
-- return_stock in the same transaction.
WITH due AS (
    SELECT id
    FROM orders
    WHERE holds_stock_until <= $2
    ORDER BY holds_stock_until
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), expired AS (
    UPDATE orders AS o
    SET status = 'cancelled', version = o.version + 1, updated_at = greatest($2, o.updated_at)
    WHERE o.id = ANY (ARRAY(SELECT id FROM due))  -- primary key lookups, whatever LIMIT $1 is estimated at
    RETURNING o.id, o.tenant_id, o.version, o.updated_at
), events AS (
    INSERT INTO outbox (id, event_type, order_id, order_version, tenant_id, created_at, payload)
    SELECT gen_random_uuid(), 'orders.cancelled', id, version, tenant_id, updated_at, jsonb_build_object(
        'orderId', id, 'tenantId', tenant_id, 'reason', 'reservation_expired', 'cancelledAt', rfc3339(updated_at))
    FROM expired
)
SELECT tenant_id, array_agg(id ORDER BY id) AS order_ids FROM expired GROUP BY tenant_id ORDER BY tenant_id;
