"""Every migration applies, rolls back and re-applies; the schema has the constraints the contract names.

The schema is the migrations' alone (the service never creates it), and pages are keyset index range scans.
"""

import uuid

import asyncpg
import pytest

from orders_svc import migrate
from orders_svc.queries import orders as queries
from orders_svc.resources import migrations_dir

from conftest import public_tables
from conftest import test_settings as settings_for
from plans import assert_keyset_range_scan, explain
from support import app_client

TABLES = {"orders", "outbox", "idempotency_keys"}


def test_every_migration_has_a_rollback():
    forward = [p for p in migrations_dir().glob("*.sql") if not p.name.endswith(".rollback.sql")]
    assert forward
    for path in forward:
        assert path.with_name(path.stem + ".rollback.sql").is_file(), path.name


async def test_migrations_apply_roll_back_and_reapply(empty_database_url):
    count = migrate.apply(empty_database_url)
    assert count == len(list(migrations_dir().glob("[0-9]*.py"))) + len(
        [p for p in migrations_dir().glob("*.sql") if not p.name.endswith(".rollback.sql")]
    )
    assert await public_tables(empty_database_url) >= TABLES
    assert migrate.apply(empty_database_url) == 0  # idempotent

    assert migrate.rollback_all(empty_database_url) == count
    assert await public_tables(empty_database_url) == set()

    assert migrate.apply(empty_database_url) == count
    assert await public_tables(empty_database_url) >= TABLES


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        (
            "INSERT INTO orders (id, tenant_id, status) VALUES (gen_random_uuid(), 't', 'shipped')",
            "orders_status_check",
        ),
        (
            "INSERT INTO orders (id, tenant_id, version) VALUES (gen_random_uuid(), 't', 0)",
            "orders_version_check",
        ),
        (
            "INSERT INTO orders (id, tenant_id, status, total_cents) "
            "VALUES (gen_random_uuid(), 't', 'confirmed', -1)",
            "orders_total_cents_check",
        ),
        (
            "INSERT INTO orders (id, tenant_id, status) VALUES (gen_random_uuid(), 't', 'confirmed')",
            "orders_total_required_check",
        ),
        (
            "INSERT INTO orders (id, tenant_id) VALUES (gen_random_uuid(), 'bad tenant')",
            "orders_tenant_id_check",
        ),
        (
            "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, expires_at) "
            "VALUES ('t', '', '', now())",
            "idempotency_keys_key_check",
        ),
    ],
)
async def test_schema_check_constraints_refuse_invalid_rows(db, statement, constraint):
    with pytest.raises(asyncpg.CheckViolationError) as raised:
        await db.execute(statement)
    assert raised.value.constraint_name == constraint


async def test_keyset_index_matches_the_list_order(db):
    definition = await db.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'orders_tenant_keyset_idx'"
    )
    assert "(tenant_id, created_at DESC, id DESC)" in definition


async def test_idempotency_keys_are_unique_per_tenant_and_key(db):
    """The primary key is (tenant_id, key): keys are scoped per tenant and one claim per key can exist."""
    columns = await db.fetch(
        "SELECT a.attname FROM pg_index AS i "
        "JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k (attnum, n) ON true "
        "JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = 'idempotency_keys'::regclass AND i.indisprimary ORDER BY k.n"
    )
    assert [c["attname"] for c in columns] == ["tenant_id", "key"]


async def test_an_orders_status_changes_write_no_index_entries_while_its_stock_stays_held(fresh_db):
    """No index of orders names the status, key or predicate: confirming any order, and every change of an
    order without lines, is a HOT update (no index written). The reservation index's column is NULL unless an
    order with lines is draft or confirmed, and changes only when it leaves those two states."""
    assert not await indexes_naming_status(fresh_db, "orders")
    plain, lined = uuid.uuid4(), uuid.uuid4()
    held = "SELECT holds_stock_until FROM orders WHERE id = $1"
    async with fresh_db.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO orders (id, tenant_id, reserved_until) "
            "VALUES ($1, 't', NULL), ($2, 't', '2030-01-01T00:00:00Z')",
            plain,
            lined,
        )
        assert await conn.fetchval(held, plain) is None
        assert str(await conn.fetchval(held, lined)).startswith("2030-01-01")
        confirm = "UPDATE orders SET status = 'confirmed', total_cents = 1, version = 2 WHERE id = $1"
        for order in (plain, lined):
            await conn.execute(confirm, order)
        await conn.execute("UPDATE orders SET status = 'closed', version = 3 WHERE id = $1", plain)
        assert await updates(conn, "orders") == (3, 3)
        assert str(await conn.fetchval(held, lined)).startswith("2030-01-01")  # confirmed: still held

        await conn.execute("UPDATE orders SET status = 'cancelled', version = 3 WHERE id = $1", lined)
        assert await conn.fetchval(held, lined) is None
        assert await updates(conn, "orders") == (4, 3)  # the index entry went: not a HOT update


async def test_a_payments_success_writes_no_index_entries_and_one_open_payment_per_order_holds(fresh_db):
    """No index of payments names the status: a success is a HOT update; a failure leaves the index of open
    payments, after which the order may ask again; a second open payment of one order is refused."""
    assert not await indexes_naming_status(fresh_db, "payments")
    order, won, lost = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    insert = (
        "INSERT INTO payments (id, tenant_id, order_id, status, amount_cents, created_at, updated_at) "
        "VALUES ($1, 't', $2, 'pending', 100, now(), now())"
    )
    async with fresh_db.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO orders (id, tenant_id, status, total_cents) VALUES ($1, 't', 'confirmed', 100)",
            order,
        )
        await conn.execute(insert, lost, order)
        with pytest.raises(asyncpg.UniqueViolationError) as refused:
            async with conn.transaction():  # a savepoint: the refusal leaves the rest of the test's rows
                await conn.execute(insert, uuid.uuid4(), order)
        assert refused.value.constraint_name == "payments_order_open_key"
        await conn.execute("UPDATE payments SET status = 'failed', failure_reason = 'x' WHERE id = $1", lost)
        assert await updates(conn, "payments") == (1, 0)  # it left the index of open payments
        await conn.execute(insert, won, order)  # the order asks again
        await conn.execute("UPDATE payments SET status = 'succeeded' WHERE id = $1", won)
        assert await updates(conn, "payments") == (2, 1)


async def indexes_naming_status(pool: asyncpg.Pool, table: str) -> list[str]:
    """The definitions of `table`'s indexes that name a status column, as a key or in their predicate."""
    rows = await pool.fetch("SELECT indexdef FROM pg_indexes WHERE tablename = $1", table)
    return [r["indexdef"] for r in rows if "status" in r["indexdef"]]


async def updates(conn: asyncpg.Connection, table: str) -> tuple[int, int]:
    """Rows of `table` this transaction updated so far, and how many of those were HOT updates."""
    row = await conn.fetchrow(
        "SELECT pg_stat_get_xact_tuples_updated(c), pg_stat_get_xact_tuples_hot_updated(c) "
        "FROM (SELECT $1::regclass AS c) AS t",
        table,
    )
    return row[0], row[1]


async def seed_orders(pool: asyncpg.Pool, tenant: str, count: int) -> None:
    """`count` orders of `tenant`, a second apart, among as many of other tenants; then fresh statistics."""
    await pool.execute(
        "INSERT INTO orders (id, tenant_id, created_at) "
        "SELECT gen_random_uuid(), CASE WHEN n % 2 = 0 THEN $1 ELSE 'other-' || n % 7 END, "
        "now() - n * interval '1 second' FROM generate_series(1, $2 * 2) AS n",
        tenant,
        count,
    )
    await pool.execute("ANALYZE orders")


@pytest.mark.parametrize("plan_cache_mode", ["auto", "force_generic_plan"])
async def test_the_services_list_statements_are_index_range_scans_without_sort(
    fresh_db, fresh_database_url, plan_cache_mode
):
    """EXPLAIN of the exact statements GET /orders runs, with real parameters, after ANALYZE: planned for
    those values, and as the generic plan the service's sessions use (one plan for every tenant, cursor)."""
    tenant = "t-explain"
    await seed_orders(fresh_db, tenant, 300)
    middle = await fresh_db.fetchrow(
        "SELECT created_at, id FROM orders WHERE tenant_id = $1 "
        "ORDER BY created_at DESC, id DESC OFFSET 150 LIMIT 1",
        tenant,
    )
    statements = {
        "first": (queries.LIST_ORDERS_FIRST, (tenant, 11)),
        "after": (queries.LIST_ORDERS_AFTER, (tenant, middle["created_at"], middle["id"], 11)),
    }
    plans = await explain(fresh_database_url, statements, plan_cache_mode)
    for name, nodes in plans.items():
        scan = assert_keyset_range_scan(
            name, nodes, "orders_tenant_keyset_idx", {"Sort", "Incremental Sort", "Seq Scan"}
        )
        if name == "after":  # the keyset position is not a filter over rows walked past
            assert "Filter" not in scan, scan


async def test_the_services_sessions_plan_each_statement_once_not_per_request(app, tenant):
    """The API's pool sets plan_cache_mode=force_generic_plan: every execution of a prepared statement reuses
    its one plan. Under the default, PostgreSQL re-planned the list statements on every request (their
    generic plan's estimate never won), which cost more than executing them."""
    async with app.state.pool.acquire() as conn:
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
        for _ in range(8):
            [newest] = await queries.list_orders(conn, tenant, None, 1) or [None]
            await queries.select_order(conn, tenant, uuid.uuid4())
            if newest is not None:
                await queries.list_orders(conn, tenant, (newest.created_at, newest.id), 1)
        rows = await conn.fetch(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement = ANY($1)",
            [queries.LIST_ORDERS_FIRST, queries.SELECT_ORDER],
        )
    assert {row["statement"] for row in rows} == {queries.LIST_ORDERS_FIRST, queries.SELECT_ORDER}
    for row in rows:
        assert row["custom_plans"] == 0 and row["generic_plans"] >= 8, dict(row)


async def schema_objects(dsn: str) -> list[str]:
    """Every relation (table, index, sequence, view) and function in the public schema, yoyo's included."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' "
            "UNION ALL SELECT p.proname FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public'"
        )
    finally:
        await conn.close()
    return [row[0] for row in rows]


async def test_the_service_creates_no_tables_on_an_unmigrated_database(empty_database_url):
    """Schema changes are the migrations' job: start-up and every endpoint leave an empty database empty.

    The process is alive but not ready (503 naming the missing migrations, see test_operations); order
    endpoints, should traffic reach it anyway, answer 503 schema_not_migrated too.
    """
    order_id = uuid.uuid4()
    writes = {"Idempotency-Key": "k", "If-Match": '"1"'}
    async with app_client(settings_for(empty_database_url)) as http:
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["details"]["reason"] == "schema_not_migrated"
        for method, path in [
            ("POST", "/orders"),
            ("GET", "/orders"),
            ("GET", f"/orders/{order_id}"),
            ("PATCH", f"/orders/{order_id}"),
            ("PATCH", f"/orders/{order_id}/confirm"),
            ("POST", f"/orders/{order_id}/close"),
        ]:
            body = {"totalCents": 1} if method == "PATCH" else None
            response = await http.request(method, path, headers={"X-Tenant-Id": "t", **writes}, json=body)
            assert response.status_code == 503, (method, path, response.text)
            assert response.json()["details"] == {"reason": "schema_not_migrated"}
    assert await schema_objects(empty_database_url) == []
