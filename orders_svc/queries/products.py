"""sql/products.sql: the catalogue's reads and guarded writes."""

import uuid
from datetime import datetime
from typing import NamedTuple

from ..db import Connection
from . import statement

INSERT_PRODUCT = statement("insert_product")
SELECT_PRODUCT = statement("select_product")
UPDATE_PRODUCT = statement("update_product")
CHANGE_STOCK = statement("change_stock")
LIST_PRODUCTS_FIRST = statement("list_products_first")
LIST_PRODUCTS_AFTER = statement("list_products_after")


class ProductRow(NamedTuple):
    id: uuid.UUID
    tenant_id: str
    sku: str
    name: str
    price_cents: int
    stock: int
    active: bool
    version: int
    created_at: datetime
    updated_at: datetime


class NewProduct(NamedTuple):
    sku: str
    name: str
    price_cents: int
    stock: int
    active: bool


class Changes(NamedTuple):
    """What a PATCH sets; None keeps the current value."""

    name: str | None
    price_cents: int | None
    active: bool | None


class Target(NamedTuple):
    """The product a guarded write is for, and the versions If-Match accepts (None: any)."""

    tenant_id: str
    product_id: uuid.UUID
    versions: list[int] | None


def _product(row: object) -> ProductRow | None:
    return None if row is None else ProductRow(*row)  # type: ignore[misc]


async def insert_product(
    conn: Connection, tenant_id: str, product_id: uuid.UUID, new: NewProduct, at: datetime
) -> ProductRow:
    row = _product(await conn.fetchrow(INSERT_PRODUCT, tenant_id, product_id, *new, at))
    assert row is not None
    return row


async def select_product(conn: Connection, tenant_id: str, product_id: uuid.UUID) -> ProductRow | None:
    return _product(await conn.fetchrow(SELECT_PRODUCT, tenant_id, product_id))


async def update_product(
    conn: Connection, target: Target, changes: Changes, at: datetime
) -> ProductRow | None:
    return _product(await conn.fetchrow(UPDATE_PRODUCT, *target, *changes, at))


async def change_stock(
    conn: Connection, tenant_id: str, product_id: uuid.UUID, delta: int, at: datetime
) -> ProductRow | None:
    return _product(await conn.fetchrow(CHANGE_STOCK, tenant_id, product_id, delta, at))


async def list_products(
    conn: Connection,
    tenant_id: str,
    active: bool | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[ProductRow]:
    if after is None:
        rows = await conn.fetch(LIST_PRODUCTS_FIRST, tenant_id, active, limit)
    else:
        rows = await conn.fetch(LIST_PRODUCTS_AFTER, tenant_id, active, after[0], after[1], limit)
    return [ProductRow(*row) for row in rows]
