"""EXPLAIN of the service's own prepared statements, for the tests that pin their plans."""

import json
from datetime import datetime
from typing import Any

import asyncpg

Node = dict[str, Any]


def sql_literal(value: object) -> str:
    """A test-made value as an SQL literal: EXECUTE inside EXPLAIN takes no bind parameters."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    return "'" + (value.isoformat() if isinstance(value, datetime) else str(value)) + "'"


def plan_nodes(plan: Node) -> list[Node]:
    return [plan, *(node for child in plan.get("Plans", []) for node in plan_nodes(child))]


async def explain(
    dsn: str,
    statements: dict[str, tuple[str, tuple[object, ...]]],
    plan_cache_mode: str = "force_generic_plan",
) -> dict[str, list[Node]]:
    """Each statement prepared under its name and explained with its values: the nodes of its plan."""
    conn = await asyncpg.connect(dsn, server_settings={"plan_cache_mode": plan_cache_mode})
    try:
        plans = {}
        for name, (statement, args) in statements.items():
            await conn.execute(f"PREPARE {name} AS {statement}")
            literals = ", ".join(sql_literal(a) for a in args)
            [plan] = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE {name}({literals})"))
            plans[name] = plan_nodes(plan["Plan"])
    finally:
        await conn.close()
    return plans


async def explain_one(dsn: str, statement: str, args: tuple[object, ...]) -> list[Node]:
    return (await explain(dsn, {"s": (statement, args)}))["s"]


def assert_keyset_range_scan(name: str, nodes: list[Node], index: str, forbidden: set[str]) -> Node:
    """A list page: one index range scan on `index` led by the tenant, nothing in `forbidden` (a sort, a
    sequential scan); the page after a cursor bounds the scan itself by the keyset position."""
    kinds = [node["Node Type"] for node in nodes]
    assert not forbidden & set(kinds), (name, kinds)
    [scan] = [node for node in nodes if node["Node Type"] == "Index Scan"]
    assert scan["Index Name"] == index, (name, scan)
    condition = scan["Index Cond"]
    assert "tenant_id" in condition, (name, condition)
    if name == "after":
        assert "ROW(created_at, id) < ROW(" in condition, condition
    return scan
