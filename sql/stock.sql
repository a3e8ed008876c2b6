-- Reservations: the stock an order with lines holds while draft or confirmed. It is taken in sql/orders.sql's
-- create_order_with_items and given back by give_stock_back when the order is cancelled, whoever cancels it
-- (the client, a failed payment, housekeeping): products are always locked in id order, after the order's row
-- and after their places in the creates' queue (see create_order_with_items).

-- name: select_due_reservations
-- Housekeeping, across tenants: up to $1 orders still holding stock whose reservation ended at or before $2
-- (the service's clock), the oldest first, by tenant and id. Each is then cancelled as a client's cancel is.
SELECT tenant_id, id
FROM orders
WHERE holds_stock_until <= $2
ORDER BY holds_stock_until
LIMIT $1;

-- name: give_stock_back
-- The stock of the lines of order $2 of tenant $1, just cancelled by transition_order in this transaction (which
-- holds the order's row), back to their products at $3: queued for the products as a create is (their advisory
-- locks, in key order: a transaction that creates several orders at once holds its products' queue places while
-- it locks their rows one order after another), the products locked in id order, then each updated once by its
-- primary key. An order names a product on one line only (order_items_product_once_key),
-- so each product's row in `returned` is its whole quantity.
WITH returned AS (
    SELECT product_id, quantity
    FROM order_items
    WHERE tenant_id = $1 AND order_id = $2
), queued AS (
    SELECT count(pg_advisory_xact_lock(hashtext('orders_products'), q.k)) AS products
    FROM (SELECT uuid_hash(product_id) AS k FROM returned ORDER BY k) AS q
), locked AS (
    SELECT id
    FROM products
    WHERE tenant_id = $1 AND id IN (SELECT product_id FROM returned) AND (SELECT products FROM queued) >= 0
    ORDER BY id
    FOR NO KEY UPDATE
)
UPDATE products AS p
SET stock = p.stock + r.quantity, version = p.version + 1, updated_at = greatest($3, p.updated_at)
FROM returned AS r JOIN locked AS l ON l.id = r.product_id
WHERE p.tenant_id = $1 AND p.id = ANY (ARRAY(SELECT id FROM locked)) AND p.id = l.id;
