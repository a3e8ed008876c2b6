-- A payment's success is a HOT update (no index entry written), as 0011 made an order's status changes.
-- depends: 0011_orders_hot_status

-- 0009's index of open payments (at most one pending or succeeded payment per order) had status in its
-- predicate, so settling a payment wrote an entry in each of the three indexes of payments. The index now names
-- only this column, computed from the two: the payment's order while the payment is pending or succeeded, NULL
-- once it failed. A success leaves it as it was; a failure removes the payment from the index, as before.
-- Adding a stored column rewrites the table once, under its exclusive lock.
ALTER TABLE payments
    ADD COLUMN open_order_id uuid
        GENERATED ALWAYS AS (CASE WHEN status IN ('pending', 'succeeded') THEN order_id END) STORED;

DROP INDEX payments_order_open_key;
-- At most one payment per order that is pending or succeeded: the 409 payment_exists (same name as before).
CREATE UNIQUE INDEX payments_order_open_key ON payments (open_order_id) WHERE open_order_id IS NOT NULL;
