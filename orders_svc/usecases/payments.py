"""Payments: asked for by a tenant (the request leaves through the outbox), settled by the provider's signed
webhook. A settlement and all it implies (the order paid, or cancelled with its stock back, or a refund asked
for) commit together with the delivery's answer, or not at all."""

import uuid
from datetime import UTC, datetime

from .. import errors, states
from ..db import Connection, Pool, connection, contended, transaction
from ..queries import payments as queries
from ..queries import stock
from ..queries.orders import select_order
from ..queries.payments import Claimed, Delivery, Event, PaymentRow
from ..schemas import OrderPayments, Payment, PaymentWebhook, encoder, rfc3339
from ..states import OrderStatus
from ..writes import Idempotency, Reply, perform

SUCCEEDED, FAILED = "succeeded", "failed"
REFUND_REQUIRED = "payments.refund_required"


def to_payment(row: PaymentRow) -> Payment:
    return Payment(
        id=row.id,
        order_id=row.order_id,
        tenant_id=row.tenant_id,
        amount_cents=row.amount_cents,
        status=row.status,  # type: ignore[arg-type]
        failure_reason=row.failure_reason,
        created_at=rfc3339(row.created_at),
        updated_at=rfc3339(row.updated_at),
    )


async def create_payment(pool: Pool, tenant: str, order_id: uuid.UUID, idem: Idempotency) -> Reply:
    """A pending payment of the confirmed order's total and its payments.requested event, one statement in
    the key's transaction; refused (the key left unused) unless the order is confirmed with a total above 0
    and has no pending or succeeded payment."""

    async def create(conn: Connection) -> Reply:
        row = await queries.create_payment(
            conn, tenant, order_id, uuid.uuid4(), uuid.uuid4(), datetime.now(UTC)
        )
        if row is not None:
            reply = Reply(201, encoder.encode(to_payment(row)), {"location": f"/payments/{row.id}"})
            return reply
        order = await select_order(conn, tenant, order_id)
        if order is None:
            raise errors.ORDER_NOT_FOUND.error()
        if order.status != OrderStatus.CONFIRMED or not order.total_cents:
            raise errors.INVALID_TRANSITION.error(action=states.PAY.action, currentStatus=order.status)
        existing = await queries.select_open_payment(conn, tenant, order_id)
        if existing is None:  # the blocking payment failed meanwhile (and cancelled the order): ask again
            raise errors.REQUEST_IN_PROGRESS.error()
        raise errors.PAYMENT_EXISTS.error(paymentId=str(existing.id))

    return await perform(pool, tenant, idem, create)


async def get_payment(pool: Pool, tenant: str, payment_id: uuid.UUID) -> bytes:
    async with connection(pool) as conn:
        row = await queries.select_payment(conn, tenant, payment_id)
    if row is None:
        raise errors.PAYMENT_NOT_FOUND.error()
    return encoder.encode(to_payment(row))


async def list_order_payments(pool: Pool, tenant: str, order_id: uuid.UUID) -> bytes:
    async with connection(pool) as conn:
        rows = await queries.list_order_payments(conn, tenant, order_id)
    if rows is None:
        raise errors.ORDER_NOT_FOUND.error()
    return encoder.encode(OrderPayments(items=[to_payment(row) for row in rows]))


async def settle_payment(pool: Pool, delivery_id: str, event: PaymentWebhook) -> Reply:
    """The provider's settlement, once per delivery id: the first delivery's answer is stored with its
    effects, and a retry of it (or a concurrent copy, which waits for it) gets that answer again. A refused
    delivery changes nothing and leaves no trace, so a corrected retry is processed."""
    # Copies of one delivery queue in this process, one connection between them; distinct deliveries run
    # side by side (the route's path alone names no resource to queue on).
    contended.set(("webhook", delivery_id))
    outcome = SUCCEEDED if event.type == "payment.succeeded" else FAILED
    async with transaction(pool) as conn:
        claimed = await queries.claim_webhook_delivery(conn, delivery_id, event.data.payment_id)
        if not claimed.new:
            stored = await queries.select_webhook_delivery(conn, delivery_id)
            if stored is None:  # claimed by a transaction not committed yet (another process's)
                raise errors.REQUEST_IN_PROGRESS.error()
            return Reply(stored[0], stored[1], {}, replayed=True)
        payment = claimed.payment
        if payment is None:
            raise errors.PAYMENT_NOT_FOUND.error()
        if outcome == SUCCEEDED and event.data.amount_cents != payment.amount_cents:
            raise errors.AMOUNT_MISMATCH.error(expectedAmountCents=payment.amount_cents)
        if payment.status == outcome:  # already settled this way: the same answer, nothing changes
            reply = _answer(payment)
            await queries.answer_webhook_delivery(conn, Delivery(delivery_id, reply.body))
            return reply
        if payment.status != "pending":
            raise errors.PAYMENT_SETTLED.error(currentStatus=payment.status)
        reason = event.data.failure_reason if outcome == FAILED else None
        at = max(datetime.now(UTC), payment.updated_at)
        settled = payment._replace(status=outcome, failure_reason=reason, updated_at=at)
        reply = _answer(settled)
        await _settle(conn, claimed, settled, Delivery(delivery_id, reply.body))
        return reply


def _answer(payment: PaymentRow) -> Reply:
    return Reply(200, encoder.encode(to_payment(payment)), {})


async def _settle(conn: Connection, claimed: Claimed, settled: PaymentRow, delivery: Delivery) -> None:
    """Settle the locked pending payment and apply what it means for its order, as that order stands."""
    payment = claimed.payment
    assert payment is not None and claimed.order_version is not None
    order_status, event_id = claimed.order_status, uuid.uuid4()
    if settled.status == SUCCEEDED and order_status == OrderStatus.CONFIRMED:
        done = await queries.pay_order(conn, payment, event_id, settled.updated_at, delivery)
    elif settled.status == FAILED and order_status == OrderStatus.CONFIRMED:
        with_lines = await queries.cancel_unpaid_order(
            conn, payment, event_id, settled.failure_reason, settled.updated_at, delivery
        )
        if with_lines:
            await stock.return_stock(conn, payment.tenant_id, [payment.order_id], settled.updated_at)
        done = with_lines is not None
    else:
        # Cancelled meanwhile (its reservation ran out, say): money taken for it must go back. Closed
        # without waiting for the payment: the order stays as it is, as it does when a payment fails.
        refund = settled.status == SUCCEEDED and order_status == OrderStatus.CANCELLED
        event = Event(REFUND_REQUIRED, event_id, claimed.order_version) if refund else None
        done = await queries.settle_payment(conn, payment, settled, event, delivery)
    if not done:  # cannot happen under the locks held; refuse rather than answer something untrue
        raise errors.REQUEST_IN_PROGRESS.error()
