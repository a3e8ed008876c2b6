"""Payments for the tests: asking for one over the API, and the provider's signed deliveries."""

import uuid
from typing import Any

import asyncpg
import httpx
import msgspec
from catalogue import add_product, lines, order_with

from orders_svc import signatures

from helpers import confirm, tenant_headers

# The Standard Webhooks specification's own test secret, and a second one (a rotation).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEXT_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="  # base64 of 32 bytes
KEY = signatures.decode_secret(SECRET)
NEXT_KEY = signatures.decode_secret(NEXT_SECRET)


async def pay(
    client: httpx.AsyncClient, tenant: str, order_id: str, key: str | None = None
) -> httpx.Response:
    headers = tenant_headers(tenant, **{"Idempotency-Key": key or uuid.uuid4().hex})
    return await client.post(f"/orders/{order_id}/payments", headers=headers)


async def paid_order(
    client: httpx.AsyncClient, db: asyncpg.Pool, tenant: str, **stock: int
) -> tuple[str, str, str]:
    """A confirmed order with one line (2 of a product priced 250) and its pending payment: (order, payment,
    product)."""
    product = await add_product(db, tenant, stock=stock.get("stock", 10))
    created = await order_with(client, tenant, lines((product, 2)))
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]
    confirmed = await confirm(client, tenant, order_id, total=500)
    assert confirmed.status_code == 200, confirmed.text
    payment = await pay(client, tenant, order_id)
    assert payment.status_code == 201, payment.text
    return order_id, payment.json()["id"], product


def settlement(payment_id: str, outcome: str = "succeeded", amount: int = 500, **data: Any) -> bytes:
    body = {"type": f"payment.{outcome}", "data": {"paymentId": payment_id, "amountCents": amount, **data}}
    return msgspec.json.encode(body)


def signed(body: bytes, key: bytes = KEY, webhook_id: str | None = None, **at: float) -> dict[str, str]:
    return signatures.sign(key, webhook_id or f"msg_{uuid.uuid4().hex}", body, at.get("now"))


async def deliver(
    client: httpx.AsyncClient, body: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post(
        "/webhooks/payments", content=body, headers=signed(body) if headers is None else headers
    )


async def payment_row(db: asyncpg.Pool, payment_id: str) -> asyncpg.Record:
    return await db.fetchrow("SELECT * FROM payments WHERE id = $1", uuid.UUID(payment_id))


async def events(db: asyncpg.Pool, order_id: str) -> list[tuple[str, Any]]:
    rows = await db.fetch(
        "SELECT event_type, payload FROM outbox WHERE order_id = $1 ORDER BY order_version, created_at",
        uuid.UUID(order_id),
    )
    return [(row["event_type"], msgspec.json.decode(row["payload"])) for row in rows]
