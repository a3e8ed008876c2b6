"""GET /products is a keyset index range scan on products_tenant_keyset_idx, with or without ?active=, under
the generic plans the service's sessions use; its statements are keyset pages in the SQL itself."""

import uuid

import asyncpg
import pytest
from sqlcheck import conjuncts, keyset_faults, parse_one, sql_of

from orders_svc.queries import products as queries
from orders_svc.resources import load_sql

from plans import assert_keyset_range_scan, explain


@pytest.mark.parametrize("name", ["list_products_first", "list_products_after"])
def test_the_product_list_statements_use_neither_offset_nor_count(name):
    statement = load_sql()[name]
    assert keyset_faults(statement) == [], statement
    if name == "list_products_after":
        terms = [sql_of(term) for term in conjuncts(parse_one(statement).whereClause)]
        assert "(created_at, id) < ($3, $4)" in terms, terms


async def seed_products(pool: asyncpg.Pool, tenant: str, count: int) -> None:
    """`count` products of `tenant`, a second apart and every third inactive, among as many of other tenants;
    then fresh statistics."""
    await pool.execute(
        "INSERT INTO products (id, tenant_id, sku, name, price_cents, stock, active, created_at, updated_at) "
        "SELECT gen_random_uuid(), CASE WHEN n % 2 = 0 THEN $1 ELSE 'other-' || n % 7 END, 'sku-' || n, 'p', "
        "100, 5, n % 3 <> 0, now() - n * interval '1 second', now() FROM generate_series(1, $2 * 2) AS n",
        tenant,
        count,
    )
    await pool.execute("ANALYZE products")


@pytest.mark.parametrize("plan_cache_mode", ["auto", "force_generic_plan"])
@pytest.mark.parametrize("active", [None, True, False], ids=["all", "active", "inactive"])
async def test_the_product_list_statements_are_index_range_scans_without_sort(
    fresh_db, fresh_database_url, plan_cache_mode, active
):
    """EXPLAIN of the exact statements GET /products runs, with real parameters, after ANALYZE: planned for
    those values, and as the generic plan the service's sessions use (one plan for every tenant, cursor and
    filter)."""
    tenant = "t-explain"
    await seed_products(fresh_db, tenant, 300)
    middle = await fresh_db.fetchrow(
        "SELECT created_at, id FROM products WHERE tenant_id = $1 "
        "ORDER BY created_at DESC, id DESC OFFSET 150 LIMIT 1",
        tenant,
    )
    statements = {
        "first": (queries.LIST_PRODUCTS_FIRST, (tenant, active, 11)),
        "after": (queries.LIST_PRODUCTS_AFTER, (tenant, active, middle["created_at"], middle["id"], 11)),
    }
    plans = await explain(fresh_database_url, statements, plan_cache_mode)
    forbidden = {"Sort", "Incremental Sort", "Seq Scan", "Bitmap Heap Scan"}
    for name, nodes in plans.items():
        scan = assert_keyset_range_scan(name, nodes, "products_tenant_keyset_idx", forbidden)
        # The keyset position bounds the scan; only the active filter is applied to rows.
        assert "created_at" not in scan.get("Filter", ""), scan


async def test_the_services_sessions_plan_the_product_statements_once(app, tenant):
    """plan_cache_mode=force_generic_plan: each execution reuses the one generic plan, filter or none."""
    async with app.state.pool.acquire() as conn:
        for n in range(9):
            active = (None, True, False)[n % 3]
            await queries.list_products(conn, tenant, active, None, 2)
            await queries.list_products(
                conn, tenant, active, (await conn.fetchval("SELECT now()"), uuid.uuid4()), 2
            )
            await queries.select_product(conn, tenant, uuid.uuid4())
        statements = [queries.LIST_PRODUCTS_FIRST, queries.LIST_PRODUCTS_AFTER, queries.SELECT_PRODUCT]
        rows = await conn.fetch(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement = ANY($1)",
            statements,
        )
    assert {row["statement"] for row in rows} == set(statements)
    for row in rows:
        assert row["custom_plans"] == 0 and row["generic_plans"] >= 9, dict(row)
