"""sql/payments.sql: payments asked for by tenants and settled by the provider's webhook deliveries."""

import uuid
from datetime import datetime, timedelta
from typing import NamedTuple

import asyncpg

from ..db import Connection
from . import deleted, statement

CREATE_PAYMENT = statement("create_payment")
SELECT_PAYMENT = statement("select_payment")
SELECT_OPEN_PAYMENT = statement("select_open_payment")
LIST_ORDER_PAYMENTS = statement("list_order_payments")
SETTLE_PAYMENT = statement("settle_payment")
SELECT_WEBHOOK_DELIVERY = statement("select_webhook_delivery")
ANSWER_WEBHOOK_DELIVERY = statement("answer_webhook_delivery")
PURGE_WEBHOOK_DELIVERIES = statement("purge_webhook_deliveries")


class PaymentRow(NamedTuple):
    id: uuid.UUID
    tenant_id: str
    order_id: uuid.UUID
    status: str
    amount_cents: int
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime


class Settlement(NamedTuple):
    """What a provider's delivery asks for: payment `payment_id` settled as `outcome` (a success for
    `amount_cents`; a failure with `failure_reason`), at `at` on the service's clock."""

    delivery_id: str
    payment_id: uuid.UUID
    outcome: str
    amount_cents: int
    failure_reason: str | None
    at: datetime


class Settled(NamedTuple):
    """A settlement made: the delivery's stored answer, the payment's order, whether that order was paid (a
    success for a confirmed order), and whether it is to be cancelled in the same transaction (a failure for a
    confirmed order)."""

    answer: bytes
    tenant_id: str
    order_id: uuid.UUID
    paid: bool
    cancel: bool


class Delivery(NamedTuple):
    """A delivery settle_payment did not settle: its stored answer, if any, and its payment, if it exists."""

    answer: tuple[int, bytes] | None
    payment: PaymentRow | None


def _payment(row: object) -> PaymentRow | None:
    return None if row is None else PaymentRow(*row)  # type: ignore[misc]


class Placed(NamedTuple):
    """What create_payment did: whether the key was new, and whether it was claimed (the payment placed)."""

    fresh: bool
    claimed: bool


async def create_payment(
    conn: Connection,
    idem: tuple[str, bytes, timedelta],
    response: tuple[dict[str, str], bytes],
    payment: PaymentRow,
    event_id: uuid.UUID,
) -> Placed:
    """The key claimed with the response stored, and `payment` placed with its event, unless the key exists
    or the order is not confirmed with the payment's amount as its total and without an open payment."""
    key, fingerprint, ttl = idem
    headers, body = response
    try:
        row = await conn.fetchrow(
            CREATE_PAYMENT,
            payment.tenant_id,
            payment.order_id,
            payment.id,
            payment.created_at,
            payment.amount_cents,
            key,
            fingerprint,
            headers,
            body,
            ttl,
            event_id,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != "payments_order_open_key":
            raise
        return Placed(True, False)  # a concurrent request placed a payment for the order first
    assert row is not None
    return Placed(*row)


async def select_payment(conn: Connection, tenant_id: str, payment_id: uuid.UUID) -> PaymentRow | None:
    return _payment(await conn.fetchrow(SELECT_PAYMENT, tenant_id, payment_id))


async def select_open_payment(conn: Connection, tenant_id: str, order_id: uuid.UUID) -> PaymentRow | None:
    return _payment(await conn.fetchrow(SELECT_OPEN_PAYMENT, tenant_id, order_id))


async def list_order_payments(
    conn: Connection, tenant_id: str, order_id: uuid.UUID
) -> list[PaymentRow] | None:
    """The order's payments, newest first; None when the tenant has no such order."""
    rows = await conn.fetch(LIST_ORDER_PAYMENTS, tenant_id, order_id)
    if not rows:
        return None
    return [PaymentRow(*row[1:]) for row in rows if row[1] is not None]


async def settle_payment(conn: Connection, settlement: Settlement, event_id: uuid.UUID) -> Settled | None:
    """The settlement with all it means, the delivery claimed with its answer; None when the delivery id was
    claimed already or the payment is unknown, not pending, or of another amount: nothing was written."""
    row = await conn.fetchrow(SETTLE_PAYMENT, *settlement, event_id)
    return None if row is None else Settled(*row)


async def select_webhook_delivery(conn: Connection, delivery_id: str, payment_id: uuid.UUID) -> Delivery:
    row = await conn.fetchrow(SELECT_WEBHOOK_DELIVERY, delivery_id, payment_id)
    assert row is not None
    answer = (row[0], row[1]) if row[0] is not None else None
    return Delivery(answer, PaymentRow(*row[2:]) if row[2] is not None else None)


async def answer_webhook_delivery(conn: Connection, delivery_id: str, answer: bytes) -> bool:
    """Claims the delivery with its answer; False when it was claimed meanwhile."""
    return await conn.fetchval(ANSWER_WEBHOOK_DELIVERY, delivery_id, answer) is not None


async def purge_webhook_deliveries(conn: Connection, older_than: timedelta, limit: int) -> int:
    return deleted(await conn.execute(PURGE_WEBHOOK_DELIVERIES, older_than, limit))
