"""The statements orders with items add stay index scans (EXPLAIN of the exact statements, generic plans)."""

import uuid
from datetime import UTC, datetime

import asyncpg
from catalogue import add_product

from orders_svc.queries import orders, stock

from plans import Node
from plans import explain_one as explain


async def test_an_orders_lines_are_read_through_the_primary_key_and_due_reservations_through_their_index(
    fresh_db, fresh_database_url
):
    tenant, now = "t-plans", datetime.now(UTC)
    product = uuid.UUID(await add_product(fresh_db, tenant, stock=10**6))
    # 20,000 orders with one line each, a tenth of them still reserved: enough for scans to cost what they do.
    await fresh_db.execute(
        "INSERT INTO orders (id, tenant_id, status, total_cents, created_at, updated_at, reserved_until) "
        "SELECT gen_random_uuid(), $1, CASE WHEN n % 10 = 0 THEN 'draft' ELSE 'closed' END, 100, "
        "       $2::timestamptz, $2, CASE WHEN n % 10 = 0 THEN $2 + interval '15 minutes' END "
        "FROM generate_series(1, 20000) AS n",
        tenant,
        now,
    )
    await fresh_db.execute(
        "INSERT INTO order_items SELECT id, 1, tenant_id, $2, 'S', 'N', 100, 1 FROM orders "
        "WHERE tenant_id = $1",
        tenant,
        product,
    )
    await fresh_db.execute("ANALYZE")
    some = [r["id"] for r in await fresh_db.fetch("SELECT id FROM orders LIMIT 10")]

    array = "{" + ",".join(str(i) for i in some) + "}"  # as a literal: uuid[]
    items = await explain(fresh_database_url, orders.SELECT_ORDER_ITEMS, (tenant, array))
    assert not {"Seq Scan"} & {n["Node Type"] for n in items}, items
    # Either unique index leads with order_id: a lookup per order id asked for.
    assert {n.get("Index Name") for n in items} & {"order_items_pkey", "order_items_product_once_key"}

    due = await explain(fresh_database_url, stock.SELECT_DUE_RESERVATIONS, (100, now))
    assert not [n for n in due if n["Node Type"] == "Seq Scan" and n["Relation Name"] == "orders"], due
    assert "orders_reservation_due_idx" in {n.get("Index Name") for n in due}, due


async def test_creating_an_order_with_items_reads_only_the_products_it_names(fresh_db, fresh_database_url):
    """Every scan of products in the one-statement create is bounded by the ids asked for, however many
    products the tenant has: not a walk over the tenant's catalogue."""
    ids = await large_catalogue(fresh_db)
    array = "{" + ",".join(str(i) for i in ids) + "}"
    args = (
        "t1", "k", "\\x00", "{}", "\\x7b7d", uuid.uuid4(), "1 hour", datetime.now(UTC), datetime.now(UTC),
        array, "{1,1,1}", "{100,100,100}", "{S,S,S}", "{N,N,N}", 300, array, False,
    )  # fmt: skip
    nodes = await explain(fresh_database_url, orders.CREATE_ORDER_WITH_ITEMS, args)
    scans = products_scans(nodes)
    for scan in scans:
        condition = scan.get("Index Cond", "") + scan.get("Recheck Cond", "")
        assert scan["Node Type"] != "Seq Scan", scan
        if scan["Node Type"] in ("Index Scan", "Bitmap Heap Scan"):
            assert "id = ANY" in condition, scan


async def test_cancelling_an_order_with_items_reads_only_the_products_of_its_lines(
    fresh_db, fresh_database_url
):
    """give_stock_back gives a cancelled order's stock back through the primary key of each product its lines
    name (locking them, then updating them), however many products the tenant has."""
    ids = await large_catalogue(fresh_db)
    order = uuid.uuid4()
    await fresh_db.execute(
        "INSERT INTO orders (id, tenant_id, status, total_cents, created_at, updated_at, reserved_until) "
        "VALUES ($1, 't1', 'draft', 300, now(), now(), now() + interval '15 minutes')",
        order,
    )
    await fresh_db.execute(
        "INSERT INTO order_items SELECT $1, n, 't1', id, 'S', 'N', 100, 1 "
        "FROM unnest($2::uuid[]) WITH ORDINALITY AS p (id, n)",
        order,
        ids,
    )
    await fresh_db.execute("ANALYZE")
    args = ("t1", order, datetime.now(UTC))
    scans = products_scans(await explain(fresh_database_url, stock.GIVE_STOCK_BACK, args))
    assert scans
    for scan in scans:
        assert scan["Node Type"] == "Index Scan" and scan["Index Name"] == "products_pkey", scan


async def large_catalogue(pool: asyncpg.Pool) -> list[uuid.UUID]:
    """20,000 products over 8 tenants, with fresh statistics; three ids of tenant t1's."""
    await pool.execute(
        "INSERT INTO products (id, tenant_id, sku, name, price_cents, stock, created_at, updated_at) "
        "SELECT gen_random_uuid(), 't' || (n % 8), 'S' || n, 'N', 100, 1000, now(), now() "
        "FROM generate_series(1, 20000) AS n"
    )
    await pool.execute("ANALYZE products")
    return [r["id"] for r in await pool.fetch("SELECT id FROM products WHERE tenant_id = 't1' LIMIT 3")]


def products_scans(nodes: list[Node]) -> list[Node]:
    """The plan's scans of products (at least one)."""
    scans = [
        n
        for n in nodes
        if "Scan" in n["Node Type"]
        and (n.get("Relation Name") == "products" or "products" in n.get("Index Name", ""))
    ]
    assert scans, nodes
    return scans
