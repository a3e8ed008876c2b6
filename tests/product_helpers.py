"""Request helpers and row lookups for the catalogue's tests."""

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import httpx

from orders_svc.schemas import rfc3339

from support import TIMESTAMP

ADMIN = {"X-Roles": "admin"}


def admin_headers(tenant: str, **extra: str) -> dict[str, str]:
    return {"X-Tenant-Id": tenant, **ADMIN, **extra}


def product_body(**fields: Any) -> dict[str, Any]:
    return {"sku": f"SKU-{uuid.uuid4().hex[:10]}", "name": "Blue mug", "priceCents": 1250, **fields}


async def create_product(
    client: httpx.AsyncClient, tenant: str, body: Any = None, key: str | None = None, **extra: str
) -> httpx.Response:
    headers = admin_headers(tenant, **{"Idempotency-Key": key or uuid.uuid4().hex, **extra})
    return await client.post("/products", headers=headers, json=product_body() if body is None else body)


async def product_id(client: httpx.AsyncClient, tenant: str, **fields: Any) -> str:
    response = await create_product(client, tenant, product_body(**fields))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def patch_product(
    client: httpx.AsyncClient, tenant: str, pid: str, body: Any, if_match: str | None = '"1"', **extra: str
) -> httpx.Response:
    headers = admin_headers(tenant, **extra)
    if if_match is not None:
        headers["If-Match"] = if_match
    return await client.patch(f"/products/{pid}", headers=headers, json=body)


async def change_stock(
    client: httpx.AsyncClient, tenant: str, pid: str, delta: Any, key: str | None = None, **extra: str
) -> httpx.Response:
    headers = admin_headers(tenant, **{"Idempotency-Key": key or uuid.uuid4().hex, **extra})
    return await client.post(f"/products/{pid}/stock", headers=headers, json={"delta": delta})


async def product_row(db: asyncpg.Pool | asyncpg.Connection, pid: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM products WHERE id = $1", uuid.UUID(pid))


async def count_products(db: asyncpg.Pool, tenant: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM products WHERE tenant_id = $1", tenant))


def wire(row: asyncpg.Record) -> dict[str, Any]:
    """A row as the API writes it: camelCase names, ids as strings, timestamps in RFC 3339."""
    values = {}
    for name, value in row.items():
        head, *rest = name.split("_")
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, datetime):
            value = rfc3339(value)
        values[head + "".join(part.title() for part in rest)] = value
    return values


def assert_product(response: httpx.Response, status: int, row: asyncpg.Record | None) -> dict[str, Any]:
    """The response carries exactly the product in `row`, with its version as a strong ETag."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert row is not None
    body = response.json()
    assert body == wire(row)
    assert TIMESTAMP.match(body["createdAt"]) and TIMESTAMP.match(body["updatedAt"]), body
    assert response.headers["etag"] == f'"{row["version"]}"'
    return body
