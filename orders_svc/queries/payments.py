"""sql/payments.sql: payments asked for by tenants and settled by the provider's webhook deliveries."""

import uuid
from datetime import datetime, timedelta
from typing import NamedTuple

from ..db import Connection
from . import deleted, statement

CREATE_PAYMENT = statement("create_payment")
SELECT_PAYMENT = statement("select_payment")
SELECT_OPEN_PAYMENT = statement("select_open_payment")
LIST_ORDER_PAYMENTS = statement("list_order_payments")
CLAIM_WEBHOOK_DELIVERY = statement("claim_webhook_delivery")
SELECT_WEBHOOK_DELIVERY = statement("select_webhook_delivery")
ANSWER_WEBHOOK_DELIVERY = statement("answer_webhook_delivery")
PAY_ORDER = statement("pay_order")
CANCEL_UNPAID_ORDER = statement("cancel_unpaid_order")
SETTLE_PAYMENT = statement("settle_payment")
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


class Claimed(NamedTuple):
    """A delivery's claim: whether its id was new and, if so, its payment and that payment's order as they
    are under the locks now held (None: no such payment)."""

    new: bool
    payment: PaymentRow | None
    order_status: str | None
    order_version: int | None


class Delivery(NamedTuple):
    """Which delivery a settlement answers, and the answer to store for it."""

    id: str
    answer: bytes


def _payment(row: object) -> PaymentRow | None:
    return None if row is None else PaymentRow(*row)  # type: ignore[misc]


async def create_payment(
    conn: Connection,
    tenant_id: str,
    order_id: uuid.UUID,
    payment_id: uuid.UUID,
    event_id: uuid.UUID,
    at: datetime,
) -> PaymentRow | None:
    return _payment(await conn.fetchrow(CREATE_PAYMENT, tenant_id, order_id, payment_id, event_id, at))


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


async def claim_webhook_delivery(conn: Connection, delivery_id: str, payment_id: uuid.UUID) -> Claimed:
    row = await conn.fetchrow(CLAIM_WEBHOOK_DELIVERY, delivery_id, payment_id)
    assert row is not None
    payment = PaymentRow(*row[1:9]) if row[1] is not None else None
    return Claimed(row[0], payment, row[9], row[10])


async def select_webhook_delivery(conn: Connection, delivery_id: str) -> tuple[int, bytes] | None:
    row = await conn.fetchrow(SELECT_WEBHOOK_DELIVERY, delivery_id)
    return None if row is None else (row[0], row[1])


async def answer_webhook_delivery(conn: Connection, delivery: Delivery) -> None:
    await conn.execute(ANSWER_WEBHOOK_DELIVERY, delivery.id, delivery.answer)


async def pay_order(
    conn: Connection, payment: PaymentRow, event_id: uuid.UUID, at: datetime, delivery: Delivery
) -> bool:
    """confirmed -> paid with the payment's success; False when the guards matched nothing."""
    args = (payment.tenant_id, payment.order_id, payment.id, event_id, at, delivery.id, delivery.answer)
    return bool(await conn.fetchval(PAY_ORDER, *args))


async def cancel_unpaid_order(
    conn: Connection,
    payment: PaymentRow,
    event_id: uuid.UUID,
    reason: str | None,
    at: datetime,
    delivery: Delivery,
) -> bool | None:
    """confirmed -> cancelled by the payment's failure; whether the order has lines (None: no match)."""
    return await conn.fetchval(  # type: ignore[no-any-return]
        CANCEL_UNPAID_ORDER,
        payment.tenant_id,
        payment.order_id,
        payment.id,
        event_id,
        at,
        reason,
        delivery.id,
        delivery.answer,
    )


class Event(NamedTuple):
    """An outbox event a settlement writes without changing the order: its type and id, at the order's
    current version."""

    type: str
    id: uuid.UUID
    order_version: int


async def settle_payment(
    conn: Connection,
    payment: PaymentRow,
    settled: PaymentRow,
    event: Event | None,
    delivery: Delivery,
) -> bool:
    """The payment settled as `settled` says, its order left as it is; False when nothing matched."""
    count = await conn.fetchval(
        SETTLE_PAYMENT,
        payment.tenant_id,
        payment.id,
        settled.status,
        settled.failure_reason,
        settled.updated_at,
        payment.order_id,
        event.order_version if event is not None else None,
        event.type if event is not None else None,
        event.id if event is not None else None,
        delivery.id,
        delivery.answer,
    )
    return bool(count)


async def purge_webhook_deliveries(conn: Connection, older_than: timedelta, limit: int) -> int:
    return deleted(await conn.execute(PURGE_WEBHOOK_DELIVERIES, older_than, limit))
