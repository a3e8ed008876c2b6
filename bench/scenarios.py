"""What the bench measures: the SQL blocks it runs itself, the data it seeds, the HTTP scenarios wrk runs
(bench/*.lua), the statements pgbench runs (bench/*.pgbench), and the targets the table checks."""

import json
import re
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from options import BENCH
from sampling import Result

from orders_svc.pagination import encode_cursor
from orders_svc.preconditions import fingerprint
from orders_svc.resources import load_sql

# The named blocks of sql/ (orders_svc.resources.load_sql) the bench runs itself, by the HTTP scenario they
# serve. A block renamed in sql/ is renamed here and nowhere else.
SQL_BLOCKS = {
    "create": "create_order",
    "list_first": "list_orders_first",
    "list_deep": "list_orders_after",
    "create_items": "create_order_with_items",
    "hot_product": "create_order_with_items",
}

DEEP_TENANT = "bench-deep"
DEEP_ORDERS = 1_000_000
DEEP_POSITION = DEEP_ORDERS - 20  # the cursor sits on this row (0-based): the page after it is full
PAGE = 10  # the service's default page size; the SQL fetches PAGE + 1
GET_ORDERS_PER_THREAD = 5_000
DEPTH_PAIRS = 5  # first page then deep page, back to back, for the depth ratio
ITEMS_PAIRS = 5  # plain create then orders with items (or the reverse), back to back, for their ratio
REPLAY_KEYS_PER_THREAD = 20
BASE_TS = datetime(2026, 1, 1, tzinfo=UTC)

# Targets at 32 connections.
TARGET_CREATE_VS_PGBENCH = 0.60
TARGET_READ_RPS = 5_000
TARGET_P99_MS = 25.0
TARGET_DEPTH_RATIO = 1.2
TARGET_RSS_MB = 150.0


# ------------------------------------------------------------------------------------ HTTP scenarios


@dataclass(frozen=True)
class Write:
    """A write wrk sends to pre-created orders, one request per order, so that every request finds the
    version its If-Match names: bench/<key>.lua sends it to the orders of tenants bench-<key>-<thread>, seeded
    in status `seeded`; afterwards the orders in status `reaches` (and, with `outbox`, their outbox rows) are
    counted in the database."""

    key: str
    label: str
    seeded: str  # a status seed_orders knows
    reaches: str
    outbox: bool = False

    script: str = ""  # bench/<key>.lua unless named
    args: tuple[str, ...] = ()  # after the walk's own (id files, tenants)

    def __post_init__(self) -> None:
        if not self.script:
            object.__setattr__(self, "script", f"{self.key}.lua")

    @property
    def tenants(self) -> str:
        return f"bench-{self.key}-"


def order_change(key: str, reaches: str) -> Write:
    """POST /orders/{id}/<key> on confirmed orders (bench/order_change.lua), which writes an outbox event."""
    return Write(key, f"POST /orders/{{id}}/{key}", "confirmed", reaches, True, "order_change.lua", (key,))


WRITES = (
    Write("confirm", "PATCH /orders/{id}/confirm", seeded="draft", reaches="confirmed"),
    order_change("close", "closed"),
    order_change("cancel", "cancelled"),
)

# Orders with items: products per thread tenant for the spread case, and the one popular product.
ITEM_PRODUCTS_PER_THREAD = 100
ITEM_LINES = 3
TARGET_ITEMS_VS_CREATE = 0.5
TARGET_HOT_RPS = 1_000

# The rows of the HTTP table, in order.
LABELS = {
    "create": "POST /orders (create)",
    "create_items": f"POST /orders, {ITEM_LINES} items of {ITEM_PRODUCTS_PER_THREAD} products per tenant",
    "hot_product": "POST /orders, 1 item of one product every connection buys",
    "create_items_tenants": f"POST /orders, {ITEM_LINES} items, as many tenants as connections, in turn",
    "replay": "POST /orders (replayed create)",
    **{write.key: write.label for write in WRITES},
    "pay": "POST /orders/{id}/payments",
    "webhook": "POST /webhooks/payments (valid, signed)",
    "get": "GET /orders/{id}",
    "list_first": "GET /orders (first page)",
    "list_deep": f"GET /orders?cursor= (row {DEEP_POSITION + 1:,} of {DEEP_ORDERS:,})",
}


def captured_create(base: str) -> tuple[bytes, str, bytes]:
    """Fingerprint, headers (as stored) and body of a real create, for the pgbench create script."""
    headers = {"X-Tenant-Id": "bench-probe", "Idempotency-Key": uuid.uuid4().hex}
    response = post_order(base, headers)
    stored = {"etag": response.headers["etag"], "location": response.headers["location"]}
    return fingerprint("POST", "/orders", b"{}"), json.dumps(stored), response.content


def create_replay_keys(base: str, run_id: str, threads: int) -> None:
    """The keys replay.lua repeats: REPLAY_KEYS_PER_THREAD answered creates for each tenant bench-replay-i."""
    for index in range(threads):
        for k in range(REPLAY_KEYS_PER_THREAD):
            headers = {"X-Tenant-Id": f"bench-replay-{index}", "Idempotency-Key": f"replay-{run_id}-{k}"}
            status = post_order(base, headers).status_code
            assert status == 201, status


def post_order(base: str, headers: dict[str, str]) -> httpx.Response:
    response = httpx.post(
        f"{base}/orders", headers={**headers, "Content-Type": "application/json"}, content=b"{}", timeout=10
    )
    response.raise_for_status()
    return response


# -------------------------------------------------------------------------------- pgbench statements

# create_order_with_items's parameters but the tenant and the lines, as both item scripts bind them. The key
# is a variable the script sets per transaction: the statement reads it twice (is it new, then the claim), and
# a volatile expression in its place would be evaluated per row read, making the key lookup a scan of the
# tenant's keys. The response bytes are placeholders.
ITEMS_CREATE = {
    2: ":key::text",
    3: "'\\x00'::bytea",
    4: "'{}'::jsonb",
    5: "'\\x7b7d'::bytea",
    6: "gen_random_uuid()",
    7: "'3600 seconds'",
    8: "now()",
    9: "now() + interval '15 minutes'",
}

# How each bench/<key>.pgbench script binds the parameters of its SQL block (pgbench variables or server
# functions).
PGBENCH_PARAMETERS: dict[str, dict[int, str]] = {
    "create": {
        1: ":tenant_prefix || :t",
        2: "gen_random_uuid()::text",
        3: ":fingerprint",
        4: ":headers",
        5: ":body",
        6: "gen_random_uuid()",
        7: ":ttl",
        8: "now()",
    },
    "list_first": {1: ":tenant", 2: ":limit"},
    "list_deep": {1: ":tenant", 2: ":ts", 3: ":id", 4: ":limit"},
    # Three distinct products of the client's tenant (bench-items-<client % tenants>), one unit each, as
    # create_items.lua sends them: seed_products makes product n's id, sku, name and price from n, so the
    # script draws three numbers and the statement sees the same arrays the service would bind.
    "create_items": {
        1: ":tenant_prefix || :t",
        **ITEMS_CREATE,
        10: "ARRAY[" + ", ".join(f"md5(:tenant_prefix || :t || '/' || :p{n})::uuid" for n in (1, 2, 3)) + "]",
        11: "ARRAY[1, 1, 1]",
        12: "ARRAY[100 + :p1, 100 + :p2, 100 + :p3]",
        13: "ARRAY['SKU-' || :p1, 'SKU-' || :p2, 'SKU-' || :p3]",
        14: "ARRAY['Product ' || :p1, 'Product ' || :p2, 'Product ' || :p3]",
        15: "300 + :p1 + :p2 + :p3",
        16: "ARRAY[" + ", ".join(f"md5(:tenant_prefix || :t || '/' || :p{n})::uuid" for n in (1, 2, 3)) + "]",
        17: "false",
    },
    # One line of the one popular product, as the HTTP scenario sends it.
    "hot_product": {
        1: ":tenant",
        **ITEMS_CREATE,
        10: "ARRAY[:product]",
        11: "ARRAY[1]",
        12: "ARRAY[:price]",
        13: "ARRAY[:sku]",
        14: "ARRAY[:name]",
        15: ":price",
        16: "ARRAY[:product]",
        17: "false",
    },
}


def pgbench_script(key: str) -> str:
    return f"{key}.pgbench"


def pgbench_sql(key: str) -> str:
    """The SQL of a bench/*.pgbench script, without comments and meta-commands, whitespace-normalised."""
    lines = (BENCH / pgbench_script(key)).read_text().splitlines()
    text = " ".join(ln for ln in lines if not ln.lstrip().startswith(("--", "\\")))
    return " ".join(text.split()).rstrip(";").strip()


def bind(statement: str, params: dict[int, str]) -> str:
    """The statement with each $n replaced by how the pgbench script supplies it."""
    return re.sub(r"\$(\d+)(?!\d)", lambda m: params[int(m.group(1))], statement)


def check_pgbench_scripts() -> None:
    """Fail when a bench/*.pgbench script no longer runs the statement its block of sql/ holds."""
    blocks = load_sql()
    for key, params in PGBENCH_PARAMETERS.items():
        block = SQL_BLOCKS[key]
        if block not in blocks:
            sys.exit(f"bench: sql/ has no block {block!r}: update SQL_BLOCKS in bench/scenarios.py")
        expected = bind(blocks[block], params)
        # Comments inside the SQL block are not sent differently; drop them for the comparison.
        expected = " ".join(ln for ln in expected.splitlines() if not ln.lstrip().startswith("--"))
        if " ".join(expected.split()) != pgbench_sql(key):
            sys.exit(
                f"bench: bench/{pgbench_script(key)} no longer matches the {block} block of sql/: "
                "update the script"
            )


# ---------------------------------------------------------------------------------------------- data


def seed_deep_tenant(dsn: str) -> tuple[str, datetime, uuid.UUID]:
    """1,000,000 orders for one tenant, 1 ms apart; returns the cursor of the row at DEEP_POSITION."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO orders (id, tenant_id, status, version, total_cents, created_at, updated_at)
            SELECT gen_random_uuid(), %(tenant)s, 'draft', 1, NULL, ts, ts
            FROM (SELECT %(base)s::timestamptz - n * interval '1 millisecond' AS ts
                  FROM generate_series(1, %(count)s) AS n) AS s
            """,
            {"tenant": DEEP_TENANT, "base": BASE_TS, "count": DEEP_ORDERS},
        )
        ts = BASE_TS - timedelta(milliseconds=DEEP_POSITION + 1)
        row = conn.execute(
            "SELECT created_at, id FROM orders WHERE tenant_id = %s AND created_at = %s", (DEEP_TENANT, ts)
        ).fetchone()
        assert row is not None
        return encode_cursor(row[0], row[1]), row[0], row[1]


def seed_orders(dsn: str, prefix: str, threads: int, per_thread: int, status: str, ids_prefix: Path) -> None:
    """`per_thread` orders for each tenant prefix+i, in `status`; writes their ids to ids_prefix+i."""
    version, total = {"draft": (1, None), "confirmed": (2, 1999)}[status]
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            """
            INSERT INTO orders (id, tenant_id, status, version, total_cents, created_at, updated_at)
            SELECT gen_random_uuid(), %(prefix)s || t, %(status)s, %(version)s, %(total)s, now(), now()
            FROM generate_series(0, %(threads)s - 1) AS t, generate_series(1, %(count)s) AS n
            RETURNING tenant_id, id
            """,
            {
                "prefix": prefix,
                "status": status,
                "version": version,
                "total": total,
                "threads": threads,
                "count": per_thread,
            },
        ).fetchall()
    by_tenant: dict[str, list[str]] = {}
    for tenant, oid in rows:
        by_tenant.setdefault(tenant, []).append(str(oid))
    for index in range(threads):
        Path(f"{ids_prefix}{index}").write_text("\n".join(by_tenant[f"{prefix}{index}"]) + "\n")


def seed_products(dsn: str, tenant: str, count: int, ids_path: Path) -> None:
    """`count` active products of `tenant` with stock no run can exhaust; their ids to ids_path. Product n
    (1..count) has id md5(tenant/n), sku SKU-n, name Product n and price 100 + n: a pgbench script can name
    it from n alone."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            """
            INSERT INTO products (id, tenant_id, sku, name, price_cents, stock, created_at, updated_at)
            SELECT md5(%(tenant)s || '/' || n)::uuid, %(tenant)s, 'SKU-' || n, 'Product ' || n, 100 + n,
                   1000000000, now(), now()
            FROM generate_series(1, %(count)s) AS n
            RETURNING id
            """,
            {"tenant": tenant, "count": count},
        ).fetchall()
    ids_path.write_text("\n".join(str(row[0]) for row in rows) + "\n")


def vacuum(dsn: str) -> None:
    """Fresh statistics and visibility, and no autovacuum or checkpoint landing inside a scenario."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) orders")
        conn.execute("VACUUM (ANALYZE) idempotency_keys")
        conn.execute("CHECKPOINT")


# Checkpoints the server has run (pg_stat_checkpointer since PostgreSQL 17, pg_stat_bgwriter before), and WAL
# segments its sessions had to create (pg_stat_io counts WAL since PostgreSQL 18; NULL before).
SERVER_COUNTS = {
    17: "SELECT num_done, (SELECT sum(writes) FROM pg_stat_io WHERE object = 'wal' AND context = 'init'"
    " AND backend_type = 'client backend') FROM pg_stat_checkpointer",
    0: "SELECT checkpoints_timed + checkpoints_req, NULL FROM pg_stat_bgwriter",
}


def settle(dsn: str) -> tuple[int, int | None]:
    """A checkpoint now, before a row's load; returns server_counts(). A checkpoint recycles the WAL segments
    behind it as the next ones, so the load that follows writes into existing files. A young server (this
    run's) has none to recycle until its first checkpoints: a session that fills the last segment then
    creates the next one, a file of zeros (16 MB by default) and an fsync, while every commit waits (~150 ms
    at a time on this machine's disk, once per segment of WAL). It also keeps the checkpoints that come every
    checkpoint_timeout or max_wal_size out of the load."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        return _counts(conn)


def server_counts(dsn: str) -> tuple[int, int | None]:
    """How many checkpoints the server has completed, and WAL segments its sessions have created (None
    where PostgreSQL does not count them)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return _counts(conn)


def _counts(conn: psycopg.Connection) -> tuple[int, int | None]:
    row = conn.execute(SERVER_COUNTS[17 if conn.info.server_version >= 170000 else 0]).fetchone()
    assert row is not None
    return int(row[0]), None if row[1] is None else int(row[1])


def explain_pages(dsn: str, deep_ts: datetime, deep_id: uuid.UUID) -> str:
    """Buffers and execution time of the first and the deep page's statement, as the service runs them."""
    blocks = load_sql()
    # Client-side binding: EXECUTE's arguments are literals, typed by the prepared statement.
    with psycopg.connect(dsn, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        # asyncpg's prepared statements end up on the generic plan.
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(f"PREPARE first_page AS {blocks[SQL_BLOCKS['list_first']]}")
        conn.execute(f"PREPARE deep_page AS {blocks[SQL_BLOCKS['list_deep']]}")
        found: dict[str, tuple[int, float]] = {}
        for name, call, params in (
            ("first", "EXECUTE first_page(%s, %s)", (DEEP_TENANT, PAGE + 1)),
            ("deep", "EXECUTE deep_page(%s, %s, %s, %s)", (DEEP_TENANT, deep_ts, deep_id, PAGE + 1)),
        ):
            conn.execute(call, params)  # warm the cache; the plan below is the steady state
            row = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {call}", params).fetchone()
            assert row is not None
            plan = row[0][0]
            buffers = plan["Plan"].get("Shared Hit Blocks", 0) + plan["Plan"].get("Shared Read Blocks", 0)
            found[name] = (buffers, plan["Execution Time"])
    (first_buffers, first_ms), (deep_buffers, deep_ms) = found["first"], found["deep"]
    return (
        f"EXPLAIN (ANALYZE, BUFFERS), generic plan: first page {first_buffers} buffers in {first_ms:.3f} ms, "
        f"deep page {deep_buffers} buffers in {deep_ms:.3f} ms (one index range scan each, no OFFSET)."
    )


def verify_writes(dsn: str, results: dict[str, Result]) -> list[str]:
    """The writes the table counts really happened: orders moved, and one outbox row per order moved."""
    lines: list[str] = []
    events: list[str] = []
    with psycopg.connect(dsn) as conn:
        for write in WRITES:
            tenants = write.tenants + "%"
            in_status = "SELECT count(*) FROM orders WHERE tenant_id LIKE %s AND status = %s"
            moved = scalar(conn, in_status, tenants, write.reaches)
            result = results[write.key]
            ok = result.requests - result.failures
            wrapped = result.issued > result.available
            lines.append(
                f"{write.key}: {ok:,} successful responses counted by wrk, {moved:,} orders {write.reaches} "
                "in the database (requests still in flight when wrk stops are not counted)"
                + ("; **the walk ran out of pre-created orders**" if wrapped else "")
            )
            if write.outbox:
                rows = scalar(conn, "SELECT count(*) FROM outbox WHERE tenant_id LIKE %s", tenants)
                events.append(f"{write.key}: {rows:,} outbox rows for {moved:,} {write.reaches} orders")
    return lines + events


def scalar(conn: psycopg.Connection[Any], query: str, *params: object) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]
