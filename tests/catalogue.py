"""Products for the order tests, written straight into the database (the catalogue API is tested apart)."""

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from helpers import tenant_headers


async def add_product(
    db: asyncpg.Pool, tenant: str, stock: int = 10, price: int = 250, active: bool = True, name: str = ""
) -> str:
    product_id = uuid.uuid4()
    now = datetime.now(UTC)
    await db.execute(
        "INSERT INTO products (id, tenant_id, sku, name, price_cents, stock, active, created_at, updated_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        product_id,
        tenant,
        f"SKU-{product_id.hex[:12]}",
        name or f"Product {product_id.hex[:6]}",
        price,
        stock,
        active,
        now,
    )
    return str(product_id)


async def stock_of(db: asyncpg.Pool, product_id: str) -> int:
    return int(await db.fetchval("SELECT stock FROM products WHERE id = $1", uuid.UUID(product_id)))


def lines(*pairs: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"productId": product_id, "quantity": quantity} for product_id, quantity in pairs]


async def order_with(
    client: httpx.AsyncClient, tenant: str, items: list[dict[str, Any]], key: str | None = None
) -> httpx.Response:
    headers = tenant_headers(tenant, **{"Idempotency-Key": key or uuid.uuid4().hex})
    return await client.post("/orders", headers=headers, json={"items": items})


async def waiting(db: asyncpg.Pool, count: int, *, queue: bool) -> bool:
    """Whether `count` sessions wait for a lock; each must wait in the products' queue (its advisory lock)
    when `queue`, else on a row (the transaction that holds it, or the row itself)."""
    waits = await db.fetch(
        "SELECT locktype, classid = hashtext('orders_products')::oid AS queue FROM pg_locks WHERE NOT granted"
    )
    if queue:
        assert all(w["locktype"] == "advisory" and w["queue"] for w in waits), waits
    else:
        assert all(w["locktype"] in ("transactionid", "tuple") for w in waits), waits
    return len(waits) == count
