"""The catalogue's use cases: create, get, list, update, change the stock."""

import uuid
from datetime import UTC, datetime

from .. import errors
from ..db import Connection, Pool, connection
from ..pagination import encode_cursor
from ..queries import products as queries
from ..queries.products import Changes, NewProduct, ProductRow, Target
from ..schemas import Product, ProductPage, encoder, rfc3339
from ..writes import Idempotency, Reply, perform


def to_product(row: ProductRow) -> Product:
    stamps = {"created_at": rfc3339(row.created_at), "updated_at": rfc3339(row.updated_at)}
    return Product(**{**row._asdict(), **stamps})


def product_reply(row: ProductRow, status: int = 200) -> Reply:
    return Reply(status, encoder.encode(to_product(row)), {"etag": f'"{row.version}"'})


async def create_product(pool: Pool, tenant: str, new: NewProduct, idem: Idempotency) -> Reply:
    """A product, its key claimed in the same transaction: a taken sku (409) leaves the key unused."""
    product_id = uuid.uuid4()

    async def create(conn: Connection) -> Reply:
        row = await queries.insert_product(conn, tenant, product_id, new, datetime.now(UTC))
        reply = product_reply(row, 201)
        reply.headers["location"] = f"/products/{product_id}"
        return reply

    return await perform(pool, tenant, idem, create)


async def update_product(pool: Pool, target: Target, changes: Changes, idem: Idempotency | None) -> Reply:
    """Name, price or active, guarded by the version in the UPDATE itself."""

    async def update(conn: Connection) -> Reply:
        row = await queries.update_product(conn, target, changes, datetime.now(UTC))
        if row is not None:
            return product_reply(row)
        current = await _existing(conn, target.tenant_id, target.product_id)
        raise errors.STALE_VERSION.error(currentVersion=current.version)

    return await perform(pool, target.tenant_id, idem, update)


async def change_stock(
    pool: Pool, tenant: str, product_id: uuid.UUID, delta: int, idem: Idempotency
) -> Reply:
    """Adds `delta` to the stock in one guarded statement; a result outside 0..2147483647 changes nothing."""

    async def change(conn: Connection) -> Reply:
        row = await queries.change_stock(conn, tenant, product_id, delta, datetime.now(UTC))
        if row is not None:
            return product_reply(row)
        # The next statement sees at least the change that made the UPDATE miss.
        current = await _existing(conn, tenant, product_id)
        if current.stock + delta < 0:
            raise errors.INSUFFICIENT_STOCK.error(available=current.stock)
        raise errors.OUT_OF_RANGE.error()

    return await perform(pool, tenant, idem, change)


async def _existing(conn: Connection, tenant: str, product_id: uuid.UUID) -> ProductRow:
    current = await queries.select_product(conn, tenant, product_id)
    if current is None:
        raise errors.PRODUCT_NOT_FOUND.error()
    return current


async def get_product(pool: Pool, tenant: str, product_id: uuid.UUID) -> Reply:
    async with connection(pool) as conn:
        row = await _existing(conn, tenant, product_id)
    return product_reply(row)


async def require_product(pool: Pool, tenant: str, product_id: uuid.UUID) -> None:
    """404 unless the tenant has the product."""
    async with connection(pool) as conn:
        await _existing(conn, tenant, product_id)


async def list_products(
    pool: Pool, tenant: str, active: bool | None, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> bytes:
    """One page, newest first; fetching one extra row tells whether another page follows."""
    async with connection(pool) as conn:
        rows = await queries.list_products(conn, tenant, active, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more else None
    return encoder.encode(ProductPage(items=[to_product(r) for r in rows], next_cursor=cursor))
