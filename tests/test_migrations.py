"""Every migration applies, rolls back and re-applies; the schema has the constraints the contract names."""

import asyncpg
import pytest

from orders_svc import migrate
from orders_svc.resources import migrations_dir

from conftest import public_tables

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


async def test_list_query_is_an_index_range_scan_without_sort(db):
    rows = await db.fetch(
        "EXPLAIN SELECT id FROM orders WHERE tenant_id = 't' "
        "AND (created_at, id) < (now(), '00000000-0000-0000-0000-000000000000') "
        "ORDER BY created_at DESC, id DESC LIMIT 11"
    )
    text = "\n".join(r[0] for r in rows)
    assert "orders_tenant_keyset_idx" in text
    assert "Sort" not in text
