-- Reservations: the stock an order with lines holds while draft or confirmed. It is taken in sql/orders.sql's
-- create_order_with_items and given back by transition_order when the order is cancelled, whoever cancels it
-- (the client, a failed payment, housekeeping): products are always locked in id order, after the order's row.

-- name: select_due_reservations
-- Housekeeping, across tenants: up to $1 orders still holding stock whose reservation ended at or before $2
-- (the service's clock), the oldest first, by tenant and id. Each is then cancelled by transition_order.
SELECT tenant_id, id
FROM orders
WHERE holds_stock_until <= $2
ORDER BY holds_stock_until
LIMIT $1;
