-- Status changes of an order may again be HOT updates (no index entry written for the new row version).
-- depends: 0010_outbox_traceparent

-- 0007's reservation index named `status` in its predicate, and PostgreSQL writes new entries in every index of
-- a table when an update changes any column an index names, key or predicate: each confirm, close, cancel and
-- payment of any order, with items or without, wrote an entry in each of the three indexes of orders. The index
-- now names only this column, computed from the two: the instant until which the order holds stock, while it
-- is draft or confirmed with lines (NULL otherwise). It changes only when an order with lines leaves those two
-- states, so confirming any order, and every change of an order without lines, leaves it as it was. Adding a
-- stored column rewrites the table once, under its exclusive lock.
ALTER TABLE orders
    ADD COLUMN holds_stock_until timestamptz
        GENERATED ALWAYS AS (CASE WHEN status IN ('draft', 'confirmed') THEN reserved_until END) STORED;

DROP INDEX orders_reservation_due_idx;
-- Housekeeping finds the orders whose reservation ran out, oldest first, without reading the others.
CREATE INDEX orders_reservation_due_idx ON orders (holds_stock_until) WHERE holds_stock_until IS NOT NULL;
