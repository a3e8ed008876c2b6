-- Orders: the aggregate. Every read and write names its tenant, so tenant_id is NOT NULL and leads every index.
-- depends:

CREATE TABLE orders (
    id          uuid        PRIMARY KEY,
    tenant_id   text        NOT NULL
        CONSTRAINT orders_tenant_id_check CHECK (tenant_id ~ '^[A-Za-z0-9._:-]{1,64}$'),
    -- text + CHECK rather than an enum type: adding a state later is a one-line migration, not ALTER TYPE.
    status      text        NOT NULL DEFAULT 'draft'
        CONSTRAINT orders_status_check CHECK (status IN ('draft', 'confirmed', 'closed')),
    -- The optimistic-lock counter; it is also the ETag. Starts at 1, bumped by every write.
    version     integer     NOT NULL DEFAULT 1
        CONSTRAINT orders_version_check CHECK (version >= 1),
    total_cents integer
        CONSTRAINT orders_total_cents_check CHECK (total_cents >= 0),
    -- Keyset sort columns must be NOT NULL: a NULL makes the row comparison unknown and drops rows from pages.
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- A confirmed or closed order always has a total.
    CONSTRAINT orders_total_required_check CHECK (status = 'draft' OR total_cents IS NOT NULL)
);

-- Serves GET /orders: WHERE tenant_id = $1 AND (created_at, id) < ($2, $3) ORDER BY created_at DESC, id DESC.
-- The equality column first, then the sort columns in sort order, so every page is one index range scan.
CREATE INDEX orders_tenant_keyset_idx ON orders (tenant_id, created_at DESC, id DESC);
