-- Undo 0013: outbox_notify plans with the session's settings again.
ALTER FUNCTION outbox_notify() RESET ALL;
