-- Undo 0006. Cancelled orders cannot stay under the old check: the rollback refuses while any exist.
DROP FUNCTION rfc3339(timestamptz);
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check CHECK (status IN ('draft', 'confirmed', 'closed'));
