-- Idempotency keys: one row per (tenant, key) holding the first response, replayed byte for byte on retries.
-- depends: 0001_orders

CREATE TABLE idempotency_keys (
    -- Keys are scoped per tenant: one tenant can neither read nor block another tenant's key.
    tenant_id        text        NOT NULL,
    key              text        NOT NULL
        CONSTRAINT idempotency_keys_key_check CHECK (length(key) BETWEEN 1 AND 255),
    -- sha256 over method, path and canonical JSON body: the same key with another request is a 409.
    fingerprint      bytea       NOT NULL,
    -- The stored response. Written in the transaction that claims the key, so other sessions never see it empty.
    response_status  smallint,
    response_headers jsonb,
    response_body    bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- A key past expires_at is taken over by the next request with it (ON CONFLICT ... WHERE expires_at <= now()).
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

-- Housekeeping deletes expired keys in small batches, oldest first.
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);
