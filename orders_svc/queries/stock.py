"""sql/stock.sql: the reservations that ran out, and a cancelled order's stock given back (stock is taken in
sql/orders.sql's create)."""

import contextlib
import uuid
from collections.abc import Iterator
from datetime import datetime

from asyncpg import LockNotAvailableError

from ..db import Connection, QueuedTooLong
from . import statement

SELECT_DUE_RESERVATIONS = statement("select_due_reservations")
GIVE_STOCK_BACK = statement("give_stock_back")


async def select_due_reservations(conn: Connection, limit: int, now: datetime) -> list[tuple[str, uuid.UUID]]:
    """Up to `limit` orders whose reservation ended, oldest first: (tenant, order id)."""
    return [(row[0], row[1]) for row in await conn.fetch(SELECT_DUE_RESERVATIONS, limit, now)]


async def give_stock_back(conn: Connection, tenant_id: str, order_id: uuid.UUID, at: datetime) -> None:
    """The stock of a just-cancelled order's lines back to their products (queries.orders.cancel_order). Past
    the lock wait in the products' queue (an advisory lock, which names no row, unlike a wait on a row):
    QueuedTooLong, a write in progress on them."""
    with waiting_for_products():
        await conn.execute(GIVE_STOCK_BACK, tenant_id, order_id, at)


@contextlib.contextmanager
def waiting_for_products() -> Iterator[None]:
    """Statements that take or give back stock: a wait past lock_timeout, in the products' queue or on their
    rows, is QueuedTooLong (a write in progress on them)."""
    try:
        yield
    except LockNotAvailableError as exc:
        raise QueuedTooLong("waited past lock_timeout for the products") from exc
