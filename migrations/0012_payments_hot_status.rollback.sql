-- Undo 0012: the index of open payments names the status again.
DROP INDEX payments_order_open_key;
ALTER TABLE payments DROP COLUMN open_order_id;
CREATE UNIQUE INDEX payments_order_open_key ON payments (order_id) WHERE status IN ('pending', 'succeeded');
