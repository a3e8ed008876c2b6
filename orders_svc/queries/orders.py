"""sql/orders.sql: the order's reads and guarded writes."""

import uuid
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from .. import states
from ..db import Connection
from ..states import Transition
from . import statement, stock

CREATE_ORDER = statement("create_order")
SELECT_LINES = statement("select_lines")
CREATE_ORDER_WITH_ITEMS = statement("create_order_with_items")
SELECT_ORDER_ITEMS = statement("select_order_items")
SELECT_ORDER = statement("select_order")
CONFIRM_ORDER = statement("confirm_order")
TRANSITION_ORDER = statement("transition_order")
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
    reserved_until: datetime | None  # orders with lines only


class LineRow(NamedTuple):
    """A product as an order's line copies it, and whether it is for sale."""

    product_id: uuid.UUID
    sku: str
    name: str
    unit_price_cents: int
    active: bool


class Locked(NamedTuple):
    """A product create_order_with_items locked: as a line copies it, its stock, and the quantity asked."""

    line: LineRow
    stock: int
    quantity: int


class Placed(NamedTuple):
    """What create_order_with_items did: whether the key was new, whether it was claimed (the order placed),
    and each product it locked."""

    fresh: bool
    claimed: bool
    locked: list[Locked]


class ItemRow(NamedTuple):
    order_id: uuid.UUID
    product_id: uuid.UUID
    sku: str
    name: str
    unit_price_cents: int
    quantity: int


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


async def select_lines(conn: Connection, tenant_id: str, product_ids: list[uuid.UUID]) -> list[LineRow]:
    return [LineRow(*row) for row in await conn.fetch(SELECT_LINES, tenant_id, product_ids)]


class Placement(NamedTuple):
    """An order with lines to place: create_order_with_items's arguments for one order."""

    idem: tuple[str, bytes, timedelta]  # key, fingerprint, lifetime
    response: tuple[dict[str, str], bytes]  # headers, body
    order: OrderRow
    lines: list[tuple[LineRow, int]]


def _arguments(placement: Placement, queue: list[uuid.UUID] | None, lead: bool) -> tuple[object, ...]:
    (key, fingerprint, ttl), (headers, body), order, lines = placement
    products = [line.product_id for line, _ in lines]
    return (
        order.tenant_id,
        key,
        fingerprint,
        headers,
        body,
        order.id,
        ttl,
        order.created_at,
        order.reserved_until,
        products,
        [quantity for _, quantity in lines],
        [line.unit_price_cents for line, _ in lines],
        [line.sku for line, _ in lines],
        [line.name for line, _ in lines],
        order.total_cents,
        products if queue is None else queue,
        lead,
    )


def _placed(rows: list[Any]) -> Placed:
    fresh, claimed = rows[0][0], rows[0][1]
    locked = [Locked(LineRow(r[2], r[6], r[7], r[8], r[4]), r[3], r[5]) for r in rows if r[2] is not None]
    return Placed(fresh, claimed, locked)


async def create_order_with_items(conn: Connection, placement: Placement) -> Placed:
    return _placed(await conn.fetch(CREATE_ORDER_WITH_ITEMS, *_arguments(placement, None, False)))


async def create_orders_with_items(conn: Connection, placements: list[Placement]) -> list[Placed]:
    """Orders, each as create_order_with_items places it alone (on its own tenant's rows), in one transaction
    and one round trip: the first statement queues for all their products, the others for none (see the
    statement). A wait past lock_timeout, in the queue or on a row, is QueuedTooLong."""
    with stock.waiting_for_products():
        if len(placements) == 1:
            return [await create_order_with_items(conn, placements[0])]
        every = list(dict.fromkeys(line.product_id for p in placements for line, _ in p.lines))
        arguments = [_arguments(p, every if n == 0 else [], n == 0) for n, p in enumerate(placements)]
        rows = await conn.fetchmany(CREATE_ORDER_WITH_ITEMS, arguments)
    by_order: dict[uuid.UUID, list[Any]] = {}
    for row in rows:
        by_order.setdefault(row[9], []).append(row)
    return [_placed(by_order[p.order.id]) for p in placements]


async def select_order_items(conn: Connection, tenant_id: str, order_ids: list[uuid.UUID]) -> list[ItemRow]:
    return [ItemRow(*row) for row in await conn.fetch(SELECT_ORDER_ITEMS, tenant_id, order_ids)]


async def select_order(conn: Connection, tenant_id: str, order_id: uuid.UUID) -> OrderRow | None:
    return _order(await conn.fetchrow(SELECT_ORDER, tenant_id, order_id))


class Target(NamedTuple):
    """The order a guarded write is for, and the versions If-Match accepts (None: any)."""

    tenant_id: str
    order_id: uuid.UUID
    versions: list[int] | None


async def confirm_order(conn: Connection, target: Target, total: int | None, at: datetime) -> OrderRow | None:
    return _order(await conn.fetchrow(CONFIRM_ORDER, *target, total, at))


async def transition_order(
    conn: Connection,
    target: Target,
    transition: Transition,
    event_id: uuid.UUID,
    at: datetime,
    reason: str | None = None,
) -> OrderRow | None:
    """`transition` (a transition with an event) of the target order, with its event. A cancel is
    `cancel_order`."""
    return _order(
        await conn.fetchrow(
            TRANSITION_ORDER, *target, list(transition.sources), transition.target, event_id, at, reason
        )
    )


async def cancel_order(
    conn: Connection, target: Target, event_id: uuid.UUID, at: datetime, reason: str | None = None
) -> OrderRow | None:
    """Every cancellation (a client's, a failed payment's, a reservation's end): the order's transition with
    its orders.cancelled event and then, for an order with lines, their stock back, in the caller's
    transaction. Two statements, so that close's does not carry the stock's part (it cost close a fifth of
    its database time)."""
    assert conn.is_in_transaction(), "a cancellation and its stock back commit together"
    row = await transition_order(conn, target, states.CANCEL, event_id, at, reason)
    if row is not None and row.reserved_until is not None:
        await stock.give_stock_back(conn, target.tenant_id, target.order_id, at)
    return row


async def list_orders(
    conn: Connection, tenant_id: str, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[OrderRow]:
    if after is None:
        rows = await conn.fetch(LIST_ORDERS_FIRST, tenant_id, limit)
    else:
        rows = await conn.fetch(LIST_ORDERS_AFTER, tenant_id, after[0], after[1], limit)
    return [OrderRow(*row) for row in rows]
