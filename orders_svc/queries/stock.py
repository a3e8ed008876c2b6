"""sql/stock.sql: stock reserved by orders and given back when they are cancelled."""

import uuid
from datetime import datetime
from typing import NamedTuple

from ..db import Connection
from . import statement

RESERVE_STOCK = statement("reserve_stock")
RETURN_STOCK = statement("return_stock")
EXPIRE_RESERVATIONS = statement("expire_reservations")


class Reservation(NamedTuple):
    product_id: uuid.UUID
    stock: int  # as locked, before this reservation
    active: bool
    quantity: int
    reserved: bool


async def reserve_stock(
    conn: Connection, tenant_id: str, lines: list[tuple[uuid.UUID, int]], at: datetime
) -> list[Reservation]:
    products, quantities = [p for p, _ in lines], [q for _, q in lines]
    return [Reservation(*row) for row in await conn.fetch(RESERVE_STOCK, tenant_id, products, quantities, at)]


async def return_stock(conn: Connection, tenant_id: str, order_ids: list[uuid.UUID], at: datetime) -> None:
    await conn.execute(RETURN_STOCK, tenant_id, order_ids, at)


async def expire_reservations(
    conn: Connection, limit: int, now: datetime
) -> list[tuple[str, list[uuid.UUID]]]:
    """Cancel up to `limit` orders whose reservation ended; their ids by tenant."""
    return [(row[0], list(row[1])) for row in await conn.fetch(EXPIRE_RESERVATIONS, limit, now)]
