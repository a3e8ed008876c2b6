"""sql/stock.sql: stock given back when orders are cancelled (it is taken in sql/orders.sql's create)."""

import uuid
from datetime import datetime

from ..db import Connection
from . import statement

RETURN_STOCK = statement("return_stock")
EXPIRE_RESERVATIONS = statement("expire_reservations")


async def return_stock(conn: Connection, tenant_id: str, order_ids: list[uuid.UUID], at: datetime) -> None:
    await conn.execute(RETURN_STOCK, tenant_id, order_ids, at)


async def expire_reservations(
    conn: Connection, limit: int, now: datetime
) -> list[tuple[str, list[uuid.UUID]]]:
    """Cancel up to `limit` orders whose reservation ended; their ids by tenant."""
    return [(row[0], list(row[1])) for row in await conn.fetch(EXPIRE_RESERVATIONS, limit, now)]
