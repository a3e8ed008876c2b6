-- Undo 0011: the reservation index names the status again.
DROP INDEX orders_reservation_due_idx;
ALTER TABLE orders DROP COLUMN holds_stock_until;
CREATE INDEX orders_reservation_due_idx ON orders (reserved_until)
    WHERE reserved_until IS NOT NULL AND status IN ('draft', 'confirmed');
