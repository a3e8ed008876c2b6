"""sql/stock.sql: the reservations that ran out (stock is taken in sql/orders.sql's create, and given back by
its transition_order)."""

import uuid
from datetime import datetime

from ..db import Connection
from . import statement

SELECT_DUE_RESERVATIONS = statement("select_due_reservations")


async def select_due_reservations(conn: Connection, limit: int, now: datetime) -> list[tuple[str, uuid.UUID]]:
    """Up to `limit` orders whose reservation ended, oldest first: (tenant, order id)."""
    return [(row[0], row[1]) for row in await conn.fetch(SELECT_DUE_RESERVATIONS, limit, now)]
