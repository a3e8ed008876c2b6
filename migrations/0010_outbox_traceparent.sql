-- The trace of the request that wrote each outbox event, for the relay to send on as the message's traceparent.
-- depends: 0009_payments

-- The column defaults to the session setting `orders.traceparent`, which a traced write sets on its connection
-- (sql/outbox.sql, set_outbox_traceparent) before its statements run: every statement inserting events picks it
-- up without naming the column. Untraced sessions never set it: NULL. current_setting is stable, so existing
-- rows get the value at migration time (NULL) without a table rewrite.
ALTER TABLE outbox
    ADD COLUMN traceparent text DEFAULT nullif(current_setting('orders.traceparent', true), '');
