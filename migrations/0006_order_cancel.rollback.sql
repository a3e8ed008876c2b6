-- Undo 0006. Cancelled orders cannot stay under the old checks: the rollback refuses while any exist.
DROP FUNCTION rfc3339(timestamptz);
ALTER TABLE orders DROP CONSTRAINT orders_total_required_check;
ALTER TABLE orders ADD CONSTRAINT orders_total_required_check CHECK (status = 'draft' OR total_cents IS NOT NULL);
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check CHECK (status IN ('draft', 'confirmed', 'closed'));
