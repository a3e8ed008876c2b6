-- Back to a NOTIFY on every insert, as 0004 created it.
DROP TRIGGER outbox_notify_on_insert ON outbox;

CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orders_outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify_on_insert
    AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

CREATE INDEX outbox_unpublished_idx ON outbox (created_at, id) WHERE published_at IS NULL;
DROP INDEX outbox_pending_idx;
