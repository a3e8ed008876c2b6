"""sql/orders.sql: the order's reads and guarded writes."""

import uuid
from datetime import datetime, timedelta
from typing import NamedTuple

from ..db import Connection
from . import statement

CREATE_ORDER = statement("create_order")
SELECT_ORDER = statement("select_order")
CONFIRM_ORDER = statement("confirm_order")
CLOSE_ORDER = statement("close_order")
CANCEL_ORDER = statement("cancel_order")
LIST_ORDERS_FIRST = statement("list_orders_first")
LIST_ORDERS_AFTER = statement("list_orders_after")


class OrderRow(NamedTuple):
    id: uuid.UUID
    tenant_id: str
    status: str
    version: int
    total_cents: int | None
    created_at: datetime
    updated_at: datetime


def _order(row: object) -> OrderRow | None:
    return None if row is None else OrderRow(*row)  # type: ignore[misc]


async def create_order(
    conn: Connection,
    tenant_id: str,
    key: str,
    fingerprint: bytes,
    ttl: timedelta,
    headers: dict[str, str],
    body: bytes,
    order_id: uuid.UUID,
    created_at: datetime,
) -> bool:
    """Claim the key, store the response and insert the order; False when the key exists (nothing written)."""
    row = await conn.fetchrow(
        CREATE_ORDER, tenant_id, key, fingerprint, headers, body, order_id, ttl, created_at
    )
    return row is not None


async def select_order(conn: Connection, tenant_id: str, order_id: uuid.UUID) -> OrderRow | None:
    return _order(await conn.fetchrow(SELECT_ORDER, tenant_id, order_id))


class Target(NamedTuple):
    """The order a guarded write is for, and the versions If-Match accepts (None: any)."""

    tenant_id: str
    order_id: uuid.UUID
    versions: list[int] | None


async def confirm_order(conn: Connection, target: Target, total: int, at: datetime) -> OrderRow | None:
    return _order(await conn.fetchrow(CONFIRM_ORDER, *target, total, at))


async def close_order(conn: Connection, target: Target, event_id: uuid.UUID, at: datetime) -> OrderRow | None:
    return _order(await conn.fetchrow(CLOSE_ORDER, *target, event_id, at))


async def cancel_order(
    conn: Connection, target: Target, event_id: uuid.UUID, reason: str | None, at: datetime
) -> OrderRow | None:
    return _order(await conn.fetchrow(CANCEL_ORDER, *target, event_id, reason, at))


async def list_orders(
    conn: Connection, tenant_id: str, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[OrderRow]:
    if after is None:
        rows = await conn.fetch(LIST_ORDERS_FIRST, tenant_id, limit)
    else:
        rows = await conn.fetch(LIST_ORDERS_AFTER, tenant_id, after[0], after[1], limit)
    return [OrderRow(*row) for row in rows]
