-- Undo 0007: the lines, the reservations and the catalogue go (orders themselves stay).
DROP INDEX orders_reservation_due_idx;
ALTER TABLE orders DROP COLUMN reserved_until;
DROP TABLE order_items;
DROP TABLE products;
