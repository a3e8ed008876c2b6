-- Cancellation: draft or confirmed orders may end as 'cancelled' (an orders.cancelled event records it).
-- depends: 0005_outbox_notify_on_idle

-- The allowed statuses are orders_svc/states.py's OrderStatus; a test holds the two together.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('draft', 'confirmed', 'closed', 'cancelled'));
-- A draft may be cancelled before it ever had a total.
ALTER TABLE orders DROP CONSTRAINT orders_total_required_check;
ALTER TABLE orders ADD CONSTRAINT orders_total_required_check
    CHECK (status IN ('draft', 'cancelled') OR total_cents IS NOT NULL);

-- How event payloads write instants: RFC 3339 UTC with microseconds, as the API does (2026-11-22T03:50:10.123456Z).
CREATE FUNCTION rfc3339(ts timestamptz) RETURNS text
    LANGUAGE sql STABLE STRICT PARALLEL SAFE
    RETURN to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
