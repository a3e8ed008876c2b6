"""Named SQL blocks: loaded once, unique, non-empty, each documented; the shipped directories are found.

What the SQL text itself must say: keyset pages without OFFSET or COUNT, tenant $1 in every tenant statement.
"""

import re
from pathlib import Path

import pytest

from orders_svc.queries import orders as queries
from orders_svc.resources import load_sql, parse_sql_blocks, sql_dir


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
            params = set(re.findall(r"\$(\d+)", statement.split("\n", 1)[-1]))
            described = set(
                re.findall(
                    r"\$(\d+)", "\n".join(line for line in statement.splitlines() if line.startswith("--"))
                )
            )
            assert params <= described, f"{path.name}:{name} does not describe {sorted(params - described)}"


def test_every_loaded_block_is_used_by_the_package():
    source = "\n".join(p.read_text() for p in Path(queries.__file__).parents[1].rglob("*.py"))
    unused = [name for name in load_sql() if f'"{name}"' not in source]
    assert unused == []


def code_of(statement: str) -> str:
    """The statement without its `--` comments, whitespace collapsed, so checks read the SQL alone."""
    lines = (line.split("--", 1)[0] for line in statement.splitlines())
    return " ".join(" ".join(lines).split())


@pytest.mark.parametrize("name", ["list_orders_first", "list_orders_after"])
def test_the_list_statements_use_neither_offset_nor_count(name):
    """Keyset pagination: the page is found through the index, never by counting or skipping rows."""
    statement = code_of(getattr(queries, name.upper()))
    assert re.search(r"\bORDER BY created_at DESC, id DESC LIMIT \$\d+$", statement), statement
    assert not re.search(r"\b(OFFSET|COUNT)\b", statement, re.IGNORECASE), statement
    if name == "list_orders_after":
        assert "(created_at, id) < ($2, $3)" in statement, statement


# The tables holding tenant data, and the files whose statements serve one tenant's requests. outbox.sql (the
# relay and housekeeping) works across tenants by design: it publishes and purges for every tenant at once and
# is not reachable from a request; health.sql reads only yoyo's bookkeeping table.
TENANT_TABLES = {"orders", "idempotency_keys", "outbox"}
TENANT_FILES = {"orders.sql", "idempotency.sql"}
CROSS_TENANT_FILES = {"outbox.sql", "health.sql"}
_TABLE_REFERENCE = re.compile(
    r"\b(INSERT INTO|UPDATE|DELETE FROM|FROM|JOIN|USING)\s+(\w+)(?:\s+AS\s+(\w+))?", re.IGNORECASE
)
_CLAUSE_END = re.compile(
    r"(RETURNING|ORDER BY|GROUP BY|LIMIT|FOR UPDATE|ON CONFLICT|SELECT|INSERT|UPDATE|DELETE|FROM)\b",
    re.IGNORECASE,
)


def depth_zero(text: str) -> str:
    """`text` with every parenthesised part blanked out (same length), so only its top level is left."""
    kept, depth = [], 0
    for char in text:
        depth += char == "("
        kept.append(char if depth == 0 else " ")
        depth -= char == ")"
    return "".join(kept)


def split_top_level(text: str, separator: str = ",") -> list[str]:
    """`text` split at `separator` (a regex) wherever it is outside parentheses."""
    cuts = [m.span() for m in re.finditer(separator, depth_zero(text))]
    starts, ends = [0, *(e for _, e in cuts)], [*(s for s, _ in cuts), len(text)]
    return [text[a:b].strip() for a, b in zip(starts, ends, strict=True)]


def closing_paren(text: str, opening: int) -> int:
    depth = 0
    for i in range(opening, len(text)):
        depth += (text[i] == "(") - (text[i] == ")")
        if depth == 0:
            return i
    raise ValueError(text)


def where_clause(rest: str) -> str:
    """The conditions of the first WHERE in `rest`, up to the end of its (sub)statement."""
    found = re.search(r"\bWHERE\b", rest)
    if found is None:
        return ""
    depth = 0
    for i in range(found.end(), len(rest)):
        depth += (rest[i] == "(") - (rest[i] == ")")
        if depth < 0 or (depth == 0 and _CLAUSE_END.match(rest, i) and rest[i - 1] == " "):
            return rest[found.end() : i].strip()
    return rest[found.end() :].strip()


def tenant_scoping_faults(statement: str) -> list[str]:
    """Each place `statement` reads, changes or writes a tenant table without pinning tenant_id to $1.

    A read, update or delete needs a WHERE with a top-level `tenant_id = $1` conjunct (qualified by the
    table's alias after a JOIN) and no top-level OR. An insert must put $1 in tenant_id, or the tenant_id
    of a CTE of this statement that is itself scoped to $1.
    """
    sql = code_of(statement)
    scoped_ctes = {
        match.group(1)
        for match in re.finditer(r"\b(\w+) AS \(", sql)
        if not tenant_scoping_faults(sql[match.end() : closing_paren(sql, match.end() - 1)])
    }
    faults = []
    for match in _TABLE_REFERENCE.finditer(sql):
        verb, table, alias = match.group(1).upper(), match.group(2), match.group(3)
        if table not in TENANT_TABLES:
            continue
        rest = sql[match.end() :]
        if verb == "INSERT INTO":
            if not _inserts_the_tenant(rest, scoped_ctes):
                faults.append(f"INSERT INTO {table} does not take tenant_id from $1")
            continue
        clause = where_clause(rest)
        qualified = f"{alias or table}.tenant_id = $1"
        pinned = {qualified} if verb == "JOIN" else {qualified, "tenant_id = $1"}
        conjuncts = split_top_level(clause, r"\bAND\b")
        if not pinned & set(conjuncts) or re.search(r"\bOR\b", depth_zero(clause)):
            faults.append(f"{verb} {table} is not filtered by {qualified}: {clause or 'no WHERE'}")
    return faults


def _inserts_the_tenant(rest: str, scoped_ctes: set[str]) -> bool:
    columns_at = rest.index("(")
    columns = split_top_level(rest[columns_at + 1 : closing_paren(rest, columns_at)])
    after = rest[closing_paren(rest, columns_at) + 1 :].lstrip()
    if after.upper().startswith("VALUES"):
        values_at = after.index("(")
        values = split_top_level(after[values_at + 1 : closing_paren(after, values_at)])
        source = None
    else:
        select = re.match(r"SELECT (.*?) FROM (\w+)", depth_zero(after))
        if select is None:
            return False
        values = split_top_level(after[7 : select.end(1)])
        source = select.group(2)
    if "tenant_id" not in columns or len(values) != len(columns):
        return False
    value = values[columns.index("tenant_id")]
    return value == "$1" or (value == "tenant_id" and source in scoped_ctes)


def test_every_tenant_statement_pins_tenant_id_to_its_first_parameter():
    """Tenant scoping lives in the SQL: every statement of orders.sql and idempotency.sql names tenant $1."""
    files = {path.name for path in sql_dir().glob("*.sql")}
    assert files == TENANT_FILES | CROSS_TENANT_FILES, "a new SQL file: is it tenant-scoped or not?"
    checked = set()
    for name in sorted(TENANT_FILES):
        for block, statement in parse_sql_blocks((sql_dir() / name).read_text(), name).items():
            assert _TABLE_REFERENCE.search(code_of(statement)), f"{name}:{block} names no table"
            assert tenant_scoping_faults(statement) == [], f"{name}:{block}"
            checked.add(block)
    assert checked >= {
        "create_order",
        "confirm_order",
        "close_order",
        "list_orders_after",
        "claim_idempotency_key",
    }


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT id FROM orders WHERE id = $2",
        "SELECT id FROM orders",
        "SELECT id FROM orders WHERE tenant_id = $1 OR id = $2",
        "SELECT id FROM orders WHERE tenant_id = $2",
        "UPDATE orders SET version = 2 WHERE id = $2 RETURNING tenant_id = $1",
        "SELECT id FROM orders WHERE (tenant_id = $1 OR true)",
        "DELETE FROM idempotency_keys WHERE expires_at <= now()",
        "INSERT INTO orders (id, tenant_id) VALUES ($2, $3)",
        "INSERT INTO orders (id) VALUES ($2)",
        "INSERT INTO outbox (id, tenant_id) SELECT $2, tenant_id FROM orders",
        "WITH c AS (SELECT id, tenant_id FROM orders WHERE id = $2) INSERT INTO outbox (id, tenant_id) "
        "SELECT id, tenant_id FROM c",
        "SELECT o.id FROM orders AS o JOIN idempotency_keys AS k ON true WHERE o.tenant_id = $1",
    ],
)
def test_the_tenant_scoping_check_catches_an_unscoped_statement(statement):
    assert tenant_scoping_faults(statement) != []
