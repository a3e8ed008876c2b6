"""Small request helpers shared by the API tests."""

import uuid
from typing import Any

import httpx


def tenant_headers(tenant: str, **extra: str) -> dict[str, str]:
    return {"X-Tenant-Id": tenant, **extra}


async def create(
    client: httpx.AsyncClient, tenant: str, key: str | None = None, body: Any = None
) -> httpx.Response:
    headers = tenant_headers(tenant, **{"Idempotency-Key": key or uuid.uuid4().hex})
    if body is None:
        return await client.post("/orders", headers=headers)
    return await client.post("/orders", headers=headers, json=body)


async def create_id(client: httpx.AsyncClient, tenant: str) -> str:
    response = await create(client, tenant)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def confirm(
    client: httpx.AsyncClient,
    tenant: str,
    order_id: str,
    if_match: str | None = '"1"',
    total: Any = 1000,
    path: str = "/orders/{id}/confirm",
    **extra: str,
) -> httpx.Response:
    headers = tenant_headers(tenant, **extra)
    if if_match is not None:
        headers["If-Match"] = if_match
    return await client.patch(path.format(id=order_id), headers=headers, json={"totalCents": total})


async def confirmed_id(client: httpx.AsyncClient, tenant: str, total: int = 1000) -> str:
    order_id = await create_id(client, tenant)
    response = await confirm(client, tenant, order_id, total=total)
    assert response.status_code == 200, response.text
    return order_id


async def close(client: httpx.AsyncClient, tenant: str, order_id: str, **extra: str) -> httpx.Response:
    return await client.post(f"/orders/{order_id}/close", headers=tenant_headers(tenant, **extra))


async def cancel(
    client: httpx.AsyncClient, tenant: str, order_id: str, body: Any = None, **extra: str
) -> httpx.Response:
    headers = tenant_headers(tenant, **extra)
    if body is None:
        return await client.post(f"/orders/{order_id}/cancel", headers=headers)
    return await client.post(f"/orders/{order_id}/cancel", headers=headers, json=body)
