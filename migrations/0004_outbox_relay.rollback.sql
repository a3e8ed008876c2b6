-- Undo 0004: the trigger before its function, then the indexes and columns (the relay state is lost).
DROP TRIGGER outbox_notify_on_insert ON outbox;
DROP FUNCTION outbox_notify();
DROP INDEX outbox_published_idx;
DROP INDEX outbox_pending_order_idx;
ALTER TABLE outbox
    DROP COLUMN dead_at,
    DROP COLUMN next_attempt_at,
    DROP COLUMN last_error,
    DROP COLUMN last_attempt_at,
    DROP COLUMN attempts;
