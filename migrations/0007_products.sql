-- The catalogue and line items: products with their stock, orders' lines with a snapshot of each product.
-- depends: 0006_order_cancel

CREATE TABLE products (
    id          uuid        PRIMARY KEY,
    tenant_id   text        NOT NULL
        CONSTRAINT products_tenant_id_check CHECK (tenant_id ~ '^[A-Za-z0-9._:-]{1,64}$'),
    sku         text        NOT NULL
        CONSTRAINT products_sku_check CHECK (sku ~ '^[A-Za-z0-9._-]{1,64}$'),
    name        text        NOT NULL
        CONSTRAINT products_name_check CHECK (char_length(name) BETWEEN 1 AND 200),
    price_cents integer     NOT NULL
        CONSTRAINT products_price_cents_check CHECK (price_cents >= 0),
    -- Reserved by orders with one guarded UPDATE per product (stock >= quantity); this is the backstop.
    stock       integer     NOT NULL
        CONSTRAINT products_stock_check CHECK (stock >= 0),
    active      boolean     NOT NULL DEFAULT true,
    -- Counts every change of the representation, stock changes included; it is also the ETag.
    version     integer     NOT NULL DEFAULT 1
        CONSTRAINT products_version_check CHECK (version >= 1),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    CONSTRAINT products_tenant_sku_key UNIQUE (tenant_id, sku)
);

-- Serves GET /products (optionally ?active=): tenant, then the keyset sort columns, as for orders.
CREATE INDEX products_tenant_keyset_idx ON products (tenant_id, created_at DESC, id DESC);

-- An order's lines. The product's sku, name and price are copied: later changes of the product never touch an
-- order. No foreign key to products: its check would lock the product row (FOR KEY SHARE) on every order,
-- and a popular product's row is the hottest row there is; the line keeps what it needs.
CREATE TABLE order_items (
    order_id         uuid     NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line             smallint NOT NULL CONSTRAINT order_items_line_check CHECK (line BETWEEN 1 AND 50),
    tenant_id        text     NOT NULL,
    product_id       uuid     NOT NULL,
    sku              text     NOT NULL,
    name             text     NOT NULL,
    unit_price_cents integer  NOT NULL CONSTRAINT order_items_unit_price_cents_check CHECK (unit_price_cents >= 0),
    quantity         integer  NOT NULL CONSTRAINT order_items_quantity_check CHECK (quantity BETWEEN 1 AND 1000),
    PRIMARY KEY (order_id, line),
    CONSTRAINT order_items_product_once_key UNIQUE (order_id, product_id)
);

-- Orders with lines hold stock until this instant (NULL: an order without lines, as before).
ALTER TABLE orders ADD COLUMN reserved_until timestamptz;

-- Housekeeping finds the orders whose reservation ran out, oldest first, without reading the others.
CREATE INDEX orders_reservation_due_idx ON orders (reserved_until)
    WHERE reserved_until IS NOT NULL AND status IN ('draft', 'confirmed');
