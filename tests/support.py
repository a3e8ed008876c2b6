"""Shared by the API tests: the error envelope, the Order representation, row lookups, an app of its own."""

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest

from orders_svc.app import create_app
from orders_svc.schemas import rfc3339
from orders_svc.settings import Settings

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
LEAKS = ("traceback", "asyncpg", "psycopg", "select ", "insert ", "update ", "sqlstate", 'file "')


def assert_error(
    response: httpx.Response, status: int, code: str, reason: str | None = None
) -> dict[str, Any]:
    """The response is `{code, message, details?}` with this status and code (and details.reason)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) <= {"code", "message", "details"}, body
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    if reason is not None:
        assert body["details"]["reason"] == reason, body
    assert_no_leak(response)
    return body


def assert_no_leak(response: httpx.Response) -> None:
    assert response.status_code < 500 or response.status_code == 503, response.text
    text = response.text.lower()
    assert not any(leak in text for leak in LEAKS), response.text


async def order_row(db: asyncpg.Pool, order_id: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM orders WHERE id = $1", uuid.UUID(order_id))


async def count_orders(db: asyncpg.Pool, tenant: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM orders WHERE tenant_id = $1", tenant))


async def count_keys(db: asyncpg.Pool, tenant: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM idempotency_keys WHERE tenant_id = $1", tenant))


# Idempotency-Key values the contract refuses (1-255 printable ASCII after one pair of quotes is stripped).
BAD_KEYS = pytest.mark.parametrize(
    "bad_key",
    ["k" * 256, "non\x01printable", '""', b"caf\xe9"],
    ids=["256-chars", "control-char", "empty-quoted", "latin-1"],
)


async def expire_key(db: asyncpg.Pool, tenant: str, key: str) -> None:
    """Back-date a key's expiry, as if its lifetime had passed."""
    await db.execute(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' "
        "WHERE tenant_id = $1 AND key = $2",
        tenant,
        key,
    )


async def outbox_rows(db: asyncpg.Pool, order_id: str) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM outbox WHERE order_id = $1", uuid.UUID(order_id))


def assert_order(response: httpx.Response, status: int, row: asyncpg.Record | None) -> dict[str, Any]:
    """The response carries exactly the order in `row`, camelCase, with its version as a strong ETag."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert row is not None
    body = response.json()
    assert body == {
        "id": str(row["id"]),
        "tenantId": row["tenant_id"],
        "status": row["status"],
        "version": row["version"],
        "totalCents": row["total_cents"],
        "createdAt": rfc3339(row["created_at"]),
        "updatedAt": rfc3339(row["updated_at"]),
    }
    assert TIMESTAMP.match(body["createdAt"]) and TIMESTAMP.match(body["updatedAt"]), body
    assert response.headers["etag"] == f'"{row["version"]}"'
    return body


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client for an app of its own (settings other than the shared app's), its lifespan running."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as http,
    ):
        yield http


async def wait_for(condition: Any, timeout: float = 20, interval: float = 0.02) -> Any:
    """Poll an async condition until it returns something truthy; fail past the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {result!r})")
        await asyncio.sleep(interval)
