"""Named SQL blocks: loaded once, unique, non-empty, each documented; the shipped directories are found.

What the SQL itself must say, read from PostgreSQL's parse tree (tests/sqlcheck.py): keyset pages without
OFFSET or COUNT, and every tenant statement scoped to tenant $1.
"""

import re
from pathlib import Path

import pytest
from pglast import ast
from sqlcheck import (
    conjuncts,
    keyset_faults,
    parse_one,
    relation_names,
    sql_of,
    tables_with_tenant_column,
    tenant_scoping_faults,
    walk,
)

import orders_svc
from orders_svc.resources import load_sql, migrations_dir, parse_sql_blocks, sql_dir


def test_duplicate_block_names_are_refused():
    text = "-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n"
    with pytest.raises(RuntimeError, match="duplicate SQL block 'a'"):
        parse_sql_blocks(text, "x.sql")


def test_empty_blocks_are_refused():
    with pytest.raises(RuntimeError, match="empty SQL block 'a'"):
        parse_sql_blocks("-- name: a\n-- only a comment\n-- name: b\nSELECT 1;", "x.sql")


def test_blocks_are_split_by_name_and_lose_their_trailing_semicolon():
    blocks = parse_sql_blocks("-- name: a\n-- first\nSELECT 1;\n\n-- name: b\nSELECT 2;\n", "x.sql")
    assert blocks == {"a": "-- first\nSELECT 1", "b": "SELECT 2"}


def test_every_block_has_a_description_line_naming_its_parameters():
    for path in sql_dir().glob("*.sql"):
        for name, statement in parse_sql_blocks(path.read_text(), path.name).items():
            first = statement.splitlines()[0]
            assert first.startswith("-- "), f"{path.name}:{name} has no description line"
            params = {str(p.number) for p in walk(parse_one(statement)) if isinstance(p, ast.ParamRef)}
            described = set(
                re.findall(
                    r"\$(\d+)", "\n".join(line for line in statement.splitlines() if line.startswith("--"))
                )
            )
            assert params <= described, f"{path.name}:{name} does not describe {sorted(params - described)}"


def test_every_loaded_block_is_used_by_the_package():
    package = Path(orders_svc.__file__).parent
    source = "\n".join(p.read_text() for p in package.rglob("*.py"))
    unused = [name for name in load_sql() if f'"{name}"' not in source]
    assert unused == []


@pytest.mark.parametrize("name", ["list_orders_first", "list_orders_after"])
def test_the_list_statements_use_neither_offset_nor_count(name):
    """Keyset pagination: the page is found through the index, never by counting or skipping rows."""
    statement = load_sql()[name]
    assert keyset_faults(statement) == [], statement
    if name == "list_orders_after":
        terms = [sql_of(term) for term in conjuncts(parse_one(statement).whereClause)]
        assert "(created_at, id) < ($2, $3)" in terms, terms


@pytest.mark.parametrize(
    ("statement", "fault"),
    [
        ("SELECT id FROM orders ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3", "OFFSET"),
        (
            "SELECT id FROM orders ORDER BY created_at DESC, id DESC OFFSET $3 ROWS FETCH FIRST $2 ROWS ONLY",
            "OFFSET",
        ),
        ("SELECT id, count(*) OVER () FROM orders ORDER BY created_at DESC, id DESC LIMIT $2", "count"),
        (
            "SELECT id FROM orders WHERE (SELECT COUNT(*) FROM orders) > 0 ORDER BY created_at DESC LIMIT $2",
            "count",
        ),
        ("SELECT id FROM orders ORDER BY created_at, id LIMIT $2", "ordered by"),
        ("SELECT id FROM orders ORDER BY created_at DESC, id DESC", "LIMIT"),
    ],
)
def test_the_keyset_check_catches_offset_count_and_a_wrong_order(statement, fault):
    assert any(fault in found for found in keyset_faults(statement)), keyset_faults(statement)


# Blocks that serve no single tenant, each with why. Every other block is a tenant statement: it must touch a
# tenant table and scope every reference to one to tenant $1.
GLOBAL_BLOCKS = {
    "applied_migrations": "the readiness probe reads yoyo's bookkeeping table, which holds no tenant data",
    "bound_relay_transaction": "a setting of the relay's own transaction; reads no table",
    "claim_outbox_batch": "the relay publishes every tenant's events; it is not reachable from a request",
    "mark_outbox_published": "the relay, after publishing a batch claimed across tenants",
    "record_outbox_failures": "the relay, after a failed publish of a batch claimed across tenants",
    "retry_dead_outbox": "an operator command (orders-svc outbox retry-dead) for the whole queue",
    "purge_published_outbox": "housekeeping: purges published events of every tenant",
    "wait_for_outbox_writers": "the relay, before idling: waits for whichever transactions insert events",
    "bound_lock_wait": "a setting of the relay's own transaction; reads no table",
    "set_outbox_traceparent": "a setting of a traced write's session; reads no table",
    "outbox_backlog": "/metrics: the backlog of the whole outbox, every tenant's",
    "purge_expired_idempotency_keys": "housekeeping: purges expired keys of every tenant",
    "outbox_status": "an operator command (orders-svc outbox status): the backlog of every tenant's events",
    "select_due_reservations": "housekeeping: finds the expired reservations of every tenant",
    "settle_payment": "the provider's webhook names a payment, not a tenant; the statement takes the tenant "
    "from the payment it locks",
    "select_webhook_delivery": "the provider's delivery ids hold no tenant data, and it names a payment",
    "answer_webhook_delivery": "the provider's delivery ids hold no tenant data",
    "purge_webhook_deliveries": "housekeeping: purges the provider's old delivery ids",
    "select_payment_amount": "the fake provider (standing in for the payment provider) looks a payment up",
}


def tenant_tables() -> set[str]:
    """The tables the shipped migrations give a tenant_id column."""
    forward = [p for p in migrations_dir().glob("*.sql") if not p.name.endswith(".rollback.sql")]
    return set().union(*(tables_with_tenant_column(p.read_text()) for p in forward))


def test_the_tenant_tables_are_read_from_the_migrations():
    assert tenant_tables() >= {"orders", "idempotency_keys", "outbox"}


def test_every_global_block_exists():
    assert set(GLOBAL_BLOCKS) <= set(load_sql())


def test_every_tenant_statement_scopes_every_tenant_table_to_its_first_parameter():
    """Tenant scoping lives in the SQL: a block not in GLOBAL_BLOCKS pins each tenant table it uses to $1."""
    tables = tenant_tables()
    tenant_blocks = {name: sql for name, sql in load_sql().items() if name not in GLOBAL_BLOCKS}
    assert len(tenant_blocks) >= 5
    for name, statement in tenant_blocks.items():
        assert relation_names(statement) & tables, f"{name} names no tenant table: is it a global block?"
        assert tenant_scoping_faults(statement, tables) == [], name


# The checker itself, on the statements the product catalogue and payments will need.
CATALOGUE = {"orders", "idempotency_keys", "outbox", "products", "order_items", "payments"}


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param(
            "SELECT o.id, i.product_id, i.quantity FROM orders o "
            "JOIN order_items i ON i.tenant_id = o.tenant_id AND i.order_id = o.id "
            "WHERE o.tenant_id = $1 AND o.id = $2",
            id="join-on-tenant",
        ),
        pytest.param(
            "SELECT i.quantity, p.name FROM order_items AS i JOIN products AS p ON p.tenant_id = i.tenant_id "
            "AND p.id = i.product_id WHERE i.tenant_id = $1 AND i.order_id = $2",
            id="join-the-regex-reader-flagged",
        ),
        pytest.param(
            "SELECT o.id FROM orders o, order_items i "
            "WHERE o.tenant_id = $1 AND i.tenant_id = o.tenant_id AND i.order_id = o.id",
            id="comma-join-both-scoped",
        ),
        pytest.param(
            "SELECT o.id, i.quantity FROM orders o LEFT JOIN order_items i "
            "ON i.tenant_id = o.tenant_id AND i.order_id = o.id WHERE o.tenant_id = $1",
            id="left-join-through-a-scoped-side",
        ),
        pytest.param(
            "SELECT o.id FROM orders o JOIN order_items i USING (tenant_id) WHERE o.tenant_id = $1",
            id="join-using-tenant",
        ),
        pytest.param(
            "WITH cancelled AS (UPDATE orders SET status = 'cancelled', version = version + 1 "
            "WHERE tenant_id = $1 AND id = $2 AND status IN ('draft', 'confirmed') "
            "RETURNING id, tenant_id, version), "
            "event AS (INSERT INTO outbox (id, event_type, order_id, order_version, tenant_id, payload) "
            "SELECT $3, 'orders.cancelled', id, version, tenant_id, '{}'::jsonb FROM cancelled) "
            "SELECT id, version FROM cancelled",
            id="cte-scoped-write",
        ),
        pytest.param(
            "WITH items AS (UPDATE products p SET stock = p.stock - i.quantity FROM order_items i "
            "WHERE i.tenant_id = $1 AND i.order_id = $2 AND p.tenant_id = i.tenant_id "
            "AND p.id = i.product_id RETURNING p.id) SELECT count(*) FROM items",
            id="update-from",
        ),
        pytest.param(
            "INSERT INTO order_items (tenant_id, order_id, product_id, quantity, unit_price_cents) "
            "SELECT p.tenant_id, $2, p.id, $4, p.price_cents FROM products p "
            "WHERE p.tenant_id = $1 AND p.id = $3",
            id="insert-select-from-a-scoped-table",
        ),
        pytest.param(
            "INSERT INTO payments (id, tenant_id, order_id, amount_cents) "
            "SELECT $2, $1, o.id, o.total_cents FROM orders o WHERE o.tenant_id = $1 AND o.id = $3",
            id="insert-select-of-param",
        ),
        pytest.param(
            "SELECT o.id FROM orders o WHERE o.tenant_id = $1 AND NOT EXISTS "
            "(SELECT 1 FROM payments pay WHERE pay.tenant_id = o.tenant_id AND pay.order_id = o.id)",
            id="correlated-sub-select",
        ),
        pytest.param(
            "SELECT s.id FROM (SELECT * FROM orders WHERE tenant_id = $1) AS s "
            "JOIN order_items i ON i.tenant_id = s.tenant_id AND i.order_id = s.id",
            id="join-through-a-scoped-sub-select",
        ),
        pytest.param(
            "DELETE FROM order_items i USING orders o "
            "WHERE o.tenant_id = $1 AND o.id = $2 AND i.tenant_id = o.tenant_id AND i.order_id = o.id",
            id="delete-using",
        ),
        pytest.param(
            "INSERT INTO products AS p (tenant_id, id, stock) VALUES ($1::text, $2, $3) "
            "ON CONFLICT (tenant_id, id) DO UPDATE SET stock = p.stock + EXCLUDED.stock",
            id="upsert-on-the-tenant-key",
        ),
    ],
)
def test_the_tenant_scoping_check_passes_a_scoped_statement(statement):
    assert tenant_scoping_faults(statement, CATALOGUE) == []


@pytest.mark.parametrize(
    ("statement", "fault"),
    [
        ("SELECT id FROM orders WHERE id = $2", "orders is not scoped"),
        ("SELECT id FROM orders", "orders is not scoped"),
        ("SELECT id FROM orders WHERE tenant_id = $1 OR id = $2", "orders is not scoped"),
        ("SELECT id FROM orders WHERE tenant_id = $2", "orders is not scoped"),
        ("SELECT id FROM orders WHERE (tenant_id = $1 OR true)", "orders is not scoped"),
        ("SELECT id FROM orders WHERE NOT (tenant_id = $1)", "orders is not scoped"),
        ("UPDATE orders SET version = 2 WHERE id = $2 RETURNING tenant_id = $1", "orders is not scoped"),
        ("UPDATE orders SET status = 'cancelled' WHERE id = $2 AND status = 'draft'", "orders is not scoped"),
        ("UPDATE orders SET tenant_id = $2 WHERE tenant_id = $1 AND id = $3", "SET tenant_id = $2"),
        ("DELETE FROM idempotency_keys WHERE expires_at <= now()", "idempotency_keys is not scoped"),
        ("INSERT INTO orders (id, tenant_id) VALUES ($2, $3)", "INSERT INTO orders takes tenant_id"),
        (
            "INSERT INTO orders (id, tenant_id) VALUES ($2, $1), ($3, $4)",
            "INSERT INTO orders takes tenant_id",
        ),
        ("INSERT INTO orders (id) VALUES ($2)", "INSERT INTO orders lists no tenant_id"),
        ("INSERT INTO outbox (id, tenant_id) SELECT $2, tenant_id FROM orders", "orders is not scoped"),
        (
            "WITH c AS (SELECT id, tenant_id FROM orders WHERE id = $2) "
            "INSERT INTO outbox (id, tenant_id) SELECT id, tenant_id FROM c",
            "INSERT INTO outbox takes tenant_id",
        ),
        (
            "SELECT o.id FROM orders AS o JOIN idempotency_keys AS k ON true WHERE o.tenant_id = $1",
            "idempotency_keys AS k is not scoped",
        ),
        (
            "SELECT o.id FROM orders o, order_items i WHERE o.tenant_id = $1 AND i.order_id = o.id",
            "order_items AS i is not scoped",
        ),
        (
            "SELECT o.id FROM orders o JOIN order_items i ON i.order_id = o.id WHERE o.tenant_id = $1",
            "order_items AS i is not scoped",
        ),
        (
            "SELECT o.id FROM orders o LEFT JOIN order_items i ON o.tenant_id = $1 AND i.order_id = o.id",
            "orders AS o is not scoped",
        ),
        (
            "UPDATE products p SET stock = p.stock - i.quantity FROM order_items i "
            "WHERE i.tenant_id = $1 AND i.order_id = $2 AND p.id = i.product_id",
            "products AS p is not scoped",
        ),
        (
            "INSERT INTO order_items (tenant_id, order_id, product_id) "
            "SELECT p.tenant_id, $2, p.id FROM products p WHERE p.id = $3",
            "products AS p is not scoped",
        ),
        (
            "SELECT o.id FROM orders o WHERE o.tenant_id = $1 "
            "AND EXISTS (SELECT 1 FROM payments pay WHERE pay.order_id = o.id)",
            "payments AS pay is not scoped",
        ),
        (
            "SELECT id, (SELECT count(*) FROM order_items) FROM orders WHERE tenant_id = $1",
            "order_items is not scoped",
        ),
        ("SELECT id FROM orders WHERE tenant_id = $1 UNION SELECT order_id FROM order_items", "order_items"),
        (
            "INSERT INTO orders (id, tenant_id) VALUES ($2, $1) ON CONFLICT (id) DO UPDATE SET version = 1",
            "ON CONFLICT DO UPDATE on a key without tenant_id",
        ),
        ("TRUNCATE orders", "TruncateStmt on orders"),
    ],
)
def test_the_tenant_scoping_check_catches_an_unscoped_statement(statement, fault):
    faults = tenant_scoping_faults(statement, CATALOGUE)
    assert any(fault in found for found in faults), faults
