-- Back to 0005's check: no advisory lock, a backing-off event counts as pending.
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1
        FROM (
            SELECT created_at
            FROM outbox
            WHERE published_at IS NULL AND dead_at IS NULL
            ORDER BY created_at, id
            LIMIT 1
        ) AS oldest
        WHERE oldest.created_at < (SELECT min(created_at) FROM inserted)
    ) THEN
        PERFORM pg_notify('orders_outbox', '');
    END IF;
    RETURN NULL;
END;
$$;
