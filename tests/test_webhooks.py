"""POST /webhooks/payments: Standard Webhooks signatures, each delivery processed once, and the settlement
with its compensation, all of each in one transaction."""

import asyncio
import uuid

import pytest
from catalogue import stock_of
from payment_helpers import (
    KEY,
    NEXT_KEY,
    deliver,
    events,
    paid_order,
    payment_row,
    settlement,
    signed,
)

from orders_svc.housekeeping import purge

from conftest import test_settings as settings_for
from helpers import cancel, close
from support import app_client, assert_error, order_row


@pytest.fixture(scope="module")
async def client(database_url):
    # Two secrets at once: the provider may sign with either while one replaces the other.
    async with app_client(settings_for(database_url, webhook_secrets=(NEXT_KEY, KEY))) as http:
        yield http


async def unchanged(db, order_id: str, payment_id: str, product: str) -> None:
    """Nothing of the settlement happened: payment pending, order confirmed, stock taken, one event."""
    assert (await payment_row(db, payment_id))["status"] == "pending"
    assert (await order_row(db, order_id))["status"] == "confirmed"
    assert await stock_of(db, product) == 8
    assert [e for e, _ in await events(db, order_id)] == ["payments.requested"]


# ------------------------------------------------------------------------------------------- signatures
def without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != name}


def signature_cases(body: bytes) -> dict[str, tuple[bytes, dict[str, str]]]:
    good = signed(body)
    bad_base64 = {**good, "webhook-signature": good["webhook-signature"].rstrip("=") + "!"}
    import time

    now = time.time()
    return {
        "no webhook-id": (body, without(good, "webhook-id")),
        "no webhook-timestamp": (body, without(good, "webhook-timestamp")),
        "no webhook-signature": (body, without(good, "webhook-signature")),
        "no headers": (body, {}),
        "bad base64": (body, bad_base64),
        "wrong secret": (body, signed(body, key=b"k" * 32)),
        "old timestamp": (body, signed(body, now=now - 301)),
        "future timestamp": (body, signed(body, now=now + 301)),
        "body changed by one byte": (body.replace(b'"amountCents":500', b'"amountCents":501'), good),
        "body with one more byte": (body + b" ", good),
        "id changed": (body, {**good, "webhook-id": good["webhook-id"] + "x"}),
    }


@pytest.mark.parametrize(
    "case",
    [
        "no webhook-id",
        "no webhook-timestamp",
        "no webhook-signature",
        "no headers",
        "bad base64",
        "wrong secret",
        "old timestamp",
        "future timestamp",
        "body changed by one byte",
        "body with one more byte",
        "id changed",
    ],
)
async def test_a_delivery_without_a_valid_signature_is_401_and_changes_nothing(client, db, tenant, case):
    order_id, payment_id, product = await paid_order(client, db, tenant)
    body, headers = signature_cases(settlement(payment_id))[case]
    response = await client.post("/webhooks/payments", content=body, headers=headers)
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == 'StandardWebhooks realm="payments"'  # RFC 9110 11.6.1
    await unchanged(db, order_id, payment_id, product)
    assert (
        await db.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE id = $1", headers.get("webhook-id", "")
        )
        == 0
    )


async def test_a_delivery_signed_with_either_secret_of_a_rotation_is_accepted(client, db, tenant):
    for key in (KEY, NEXT_KEY):
        order_id, payment_id, _ = await paid_order(client, db, tenant)
        body = settlement(payment_id)
        response = await deliver(client, body, signed(body, key=key))
        assert response.status_code == 200, response.text
        assert (await order_row(db, order_id))["status"] == "paid"


async def test_a_signature_is_checked_before_the_body_is_read(client):
    assert_error(await client.post("/webhooks/payments", content=b"{not json"), 401, "unauthorized")
    body = b"{not json"
    assert_error(await deliver(client, body), 400, "bad_request")


async def test_a_service_without_secrets_refuses_every_delivery(database_url, db, tenant):
    async with app_client(settings_for(database_url)) as http:
        body = settlement(str(uuid.uuid4()))
        assert_error(await deliver(http, body), 401, "unauthorized")


# ------------------------------------------------------------------------------------------- settlement
async def test_success_pays_the_order_with_its_event_in_one_go(client, db, tenant):
    order_id, payment_id, product = await paid_order(client, db, tenant)
    response = await deliver(client, settlement(payment_id))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["status"], body["failureReason"]) == (payment_id, "succeeded", None)
    order = await order_row(db, order_id)
    assert (order["status"], order["version"]) == ("paid", 3)
    assert (await payment_row(db, payment_id))["status"] == "succeeded"
    [_, (paid, payload)] = await events(db, order_id)
    assert paid == "orders.paid"
    assert payload == {
        "orderId": order_id,
        "tenantId": tenant,
        "paymentId": payment_id,
        "amountCents": 500,
        "paidAt": payload["paidAt"],
    }
    got = await client.get(f"/orders/{order_id}", headers={"X-Tenant-Id": tenant})
    assert got.json()["status"] == "paid" and got.json()["updatedAt"] == payload["paidAt"]
    assert await stock_of(db, product) == 8


async def test_failure_cancels_the_order_and_gives_its_stock_back_in_one_go(client, db, tenant):
    order_id, payment_id, product = await paid_order(client, db, tenant)
    response = await deliver(client, settlement(payment_id, "failed", failureReason="card_declined"))
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["failureReason"]) == ("failed", "card_declined")
    row = await payment_row(db, payment_id)
    assert (row["status"], row["failure_reason"]) == ("failed", "card_declined")
    order = await order_row(db, order_id)
    assert (order["status"], order["version"]) == ("cancelled", 3)
    assert await stock_of(db, product) == 10
    [_, (cancelled, payload)] = await events(db, order_id)
    assert cancelled == "orders.cancelled"
    assert payload == {
        "orderId": order_id,
        "tenantId": tenant,
        "reason": "payment_failed",
        "cancelledAt": payload["cancelledAt"],
    }


async def test_success_for_an_order_cancelled_meanwhile_asks_for_a_refund(client, db, tenant):
    order_id, payment_id, product = await paid_order(client, db, tenant)
    assert (await cancel(client, tenant, order_id, {"reason": "changed my mind"})).status_code == 200
    assert await stock_of(db, product) == 10
    response = await deliver(client, settlement(payment_id))
    assert response.status_code == 200 and response.json()["status"] == "succeeded"
    order = await order_row(db, order_id)
    assert (order["status"], order["version"]) == ("cancelled", 3)
    assert await stock_of(db, product) == 10
    refund = (await events(db, order_id))[-1]
    assert refund == (
        "payments.refund_required",
        {"paymentId": payment_id, "orderId": order_id, "tenantId": tenant, "amountCents": 500},
    )
    version = await db.fetchval(
        "SELECT order_version FROM outbox WHERE order_id = $1 AND event_type = 'payments.refund_required'",
        uuid.UUID(order_id),
    )
    assert version == 3  # after the orders.cancelled event of the same version, in creation order


async def test_failure_for_an_order_cancelled_meanwhile_only_fails_the_payment(client, db, tenant):
    order_id, payment_id, product = await paid_order(client, db, tenant)
    assert (await cancel(client, tenant, order_id)).status_code == 200
    response = await deliver(client, settlement(payment_id, "failed"))
    assert response.status_code == 200 and response.json()["status"] == "failed"
    assert await stock_of(db, product) == 10  # given back once, by the cancel
    assert [e for e, _ in await events(db, order_id)] == ["payments.requested", "orders.cancelled"]


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
async def test_a_settlement_for_an_order_closed_meanwhile_only_settles_the_payment(
    client, db, tenant, outcome
):
    """Closed without waiting for its payment: the order is done, so money taken for it is owed, not
    refunded, and an order that changes nothing writes no event."""
    order_id, payment_id, product = await paid_order(client, db, tenant)
    assert (await close(client, tenant, order_id)).status_code == 200
    response = await deliver(client, settlement(payment_id, outcome))
    assert response.status_code == 200 and response.json()["status"] == outcome
    order = await order_row(db, order_id)
    assert (order["status"], order["version"]) == ("closed", 3)
    assert await stock_of(db, product) == 8
    assert [e for e, _ in await events(db, order_id)] == ["payments.requested", "orders.closed"]


async def test_an_order_whose_reservation_expires_while_its_payment_is_pending_is_refunded(
    fresh_database_url, fresh_db, tenant
):
    async with app_client(settings_for(fresh_database_url, webhook_secrets=(KEY,))) as http:
        order_id, payment_id, product = await paid_order(http, fresh_db, tenant)
        await fresh_db.execute(
            "UPDATE orders SET reserved_until = now() - interval '1 second' WHERE id = $1",
            uuid.UUID(order_id),
        )
        assert (await purge_with(fresh_database_url)).expired_reservations == 1
        assert (await deliver(http, settlement(payment_id))).status_code == 200
    assert (await order_row(fresh_db, order_id))["status"] == "cancelled"
    assert await stock_of(fresh_db, product) == 10
    assert [e for e, _ in await events(fresh_db, order_id)] == [
        "payments.requested",
        "orders.cancelled",
        "payments.refund_required",
    ]


async def test_a_wrong_amount_is_422_and_changes_nothing(client, db, tenant):
    order_id, payment_id, product = await paid_order(client, db, tenant)
    response = await deliver(client, settlement(payment_id, amount=499))
    assert_error(response, 422, "validation_error", "amount_mismatch")
    assert response.json()["details"]["expectedAmountCents"] == 500
    await unchanged(db, order_id, payment_id, product)


async def test_an_unknown_payment_is_404(client, db):
    assert_error(await deliver(client, settlement(str(uuid.uuid4()))), 404, "not_found")


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
async def test_the_same_settlement_in_another_delivery_is_200_and_changes_nothing(
    client, db, tenant, outcome
):
    order_id, payment_id, product = await paid_order(client, db, tenant)
    first = await deliver(client, settlement(payment_id, outcome))
    before = (await order_row(db, order_id), await events(db, order_id), await stock_of(db, product))
    again = await deliver(client, settlement(payment_id, outcome))
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert (await order_row(db, order_id), await events(db, order_id), await stock_of(db, product)) == before


@pytest.mark.parametrize(("first", "then"), [("succeeded", "failed"), ("failed", "succeeded")])
async def test_a_settlement_the_other_way_is_409_and_changes_nothing(client, db, tenant, first, then):
    order_id, payment_id, product = await paid_order(client, db, tenant)
    assert (await deliver(client, settlement(payment_id, first))).status_code == 200
    before = (await order_row(db, order_id), await events(db, order_id), await stock_of(db, product))
    response = await deliver(client, settlement(payment_id, then))
    assert_error(response, 409, "conflict", "payment_settled")
    assert response.json()["details"]["currentStatus"] == first
    assert (await order_row(db, order_id), await events(db, order_id), await stock_of(db, product)) == before


# ------------------------------------------------------------------------------------------- once per id
async def test_a_repeated_delivery_gets_the_first_answer_and_is_processed_once(client, db, tenant):
    order_id, payment_id, product = await paid_order(client, db, tenant)
    body = settlement(payment_id, "failed", failureReason="insufficient_funds")
    headers = signed(body)
    first = await deliver(client, body, headers)
    again = await deliver(client, body, signed(body, webhook_id=headers["webhook-id"]))
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.content == first.content
    assert await stock_of(db, product) == 10
    assert [e for e, _ in await events(db, order_id)] == ["payments.requested", "orders.cancelled"]
    stored = await db.fetchrow("SELECT * FROM webhook_deliveries WHERE id = $1", headers["webhook-id"])
    assert (stored["response_status"], bytes(stored["response_body"])) == (200, first.content)


@pytest.mark.parametrize(
    "reason",
    [None, "card_declined", 'quote " backslash \\ slash / <tag> & é \u2028 \x01 \x1f \x7f \n\t\b\f\r'],
)
async def test_the_answer_stored_with_a_settlement_is_the_payment_as_the_api_renders_it(
    client, db, tenant, reason
):
    """The statement that settles renders the answer it stores: the same bytes as GET /payments/{id}."""
    for outcome in ("succeeded", "failed"):
        _, payment_id, _ = await paid_order(client, db, tenant)
        body = settlement(payment_id, outcome, **({"failureReason": reason} if reason else {}))
        headers = signed(body)
        first = await deliver(client, body, headers)
        assert first.status_code == 200, first.text
        got = await client.get(f"/payments/{payment_id}", headers={"X-Tenant-Id": tenant})
        assert first.content == got.content
        again = await deliver(client, body, signed(body, webhook_id=headers["webhook-id"]))
        assert (again.content, again.headers.get("idempotent-replayed")) == (first.content, "true")


async def test_a_refused_delivery_leaves_no_trace_so_its_corrected_retry_is_processed(client, db, tenant):
    order_id, payment_id, _ = await paid_order(client, db, tenant)
    wrong = settlement(payment_id, amount=1)
    headers = signed(wrong)
    assert (await deliver(client, wrong, headers)).status_code == 422
    right = settlement(payment_id)
    retried = await deliver(client, right, signed(right, webhook_id=headers["webhook-id"]))
    assert retried.status_code == 200 and (await order_row(db, order_id))["status"] == "paid"


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
async def test_ten_concurrent_copies_of_a_delivery_are_processed_once(client, db, tenant, outcome):
    for _ in range(3):
        order_id, payment_id, product = await paid_order(client, db, tenant)
        body = settlement(payment_id, outcome)
        headers = signed(body)
        answers = await asyncio.gather(*(deliver(client, body, headers) for _ in range(10)))
        assert [a.status_code for a in answers] == [200] * 10, [a.text for a in answers]
        assert len({a.content for a in answers}) == 1
        assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 9
        assert len(await events(db, order_id)) == 2
        assert await stock_of(db, product) == (8 if outcome == "succeeded" else 10)


async def test_concurrent_distinct_deliveries_of_opposite_settlements_settle_once(client, db, tenant):
    for _ in range(3):
        order_id, payment_id, product = await paid_order(client, db, tenant)
        bodies = [settlement(payment_id, outcome) for outcome in ("succeeded", "failed") * 5]
        answers = await asyncio.gather(*(deliver(client, body) for body in bodies))
        row = await payment_row(db, payment_id)
        won = [a for a in answers if a.status_code == 200]
        assert {a.json()["status"] for a in won} == {row["status"]}
        assert all(a.status_code == 409 for a in answers if a not in won)
        assert len(await events(db, order_id)) == 2
        assert await stock_of(db, product) == (8 if row["status"] == "succeeded" else 10)


# ------------------------------------------------------------------------------------------- atomicity
@pytest.mark.parametrize(
    ("table", "check"),
    [
        ("outbox", "event_type <> 'orders.cancelled'"),  # after the order, payment and event are written
        ("products", "stock < {stock}"),  # the stock given back is the last step
        ("webhook_deliveries", "response_status IS NULL"),  # the answer is stored with the settlement
    ],
)
async def test_a_failure_mid_compensation_leaves_no_partial_effect(
    fresh_database_url, fresh_db, tenant, table, check
):
    async with app_client(settings_for(fresh_database_url, webhook_secrets=(KEY,))) as http:
        order_id, payment_id, product = await paid_order(http, fresh_db, tenant)
        await fresh_db.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT refuse CHECK ({check.format(stock=9)}) NOT VALID"
        )
        body = settlement(payment_id, "failed")
        headers = signed(body)
        failed = await deliver(http, body, headers)
        assert failed.status_code == 500 and failed.json()["code"] == "internal_error"
        await unchanged(fresh_db, order_id, payment_id, product)
        assert await fresh_db.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
        await fresh_db.execute(f"ALTER TABLE {table} DROP CONSTRAINT refuse")
        retried = await deliver(http, body, signed(body, webhook_id=headers["webhook-id"]))
        assert retried.status_code == 200, retried.text
        assert (await order_row(fresh_db, order_id))["status"] == "cancelled"
        assert await stock_of(fresh_db, product) == 10


async def test_a_failure_mid_payment_leaves_no_partial_effect(fresh_database_url, fresh_db, tenant):
    async with app_client(settings_for(fresh_database_url, webhook_secrets=(KEY,))) as http:
        order_id, payment_id, product = await paid_order(http, fresh_db, tenant)
        await fresh_db.execute(
            "ALTER TABLE outbox ADD CONSTRAINT refuse CHECK (event_type <> 'orders.paid') NOT VALID"
        )
        failed = await deliver(http, settlement(payment_id))
        assert failed.status_code == 500
        await unchanged(fresh_db, order_id, payment_id, product)
        await fresh_db.execute("ALTER TABLE outbox DROP CONSTRAINT refuse")
        assert (await deliver(http, settlement(payment_id))).status_code == 200
        assert (await order_row(fresh_db, order_id))["status"] == "paid"


# ------------------------------------------------------------------------------------------- retention
async def test_housekeeping_purges_delivery_ids_past_their_retention_only(
    fresh_database_url, fresh_db, tenant
):
    async with app_client(settings_for(fresh_database_url, webhook_secrets=(KEY,))) as http:
        for _ in range(3):
            _, payment_id, _ = await paid_order(http, fresh_db, tenant)
            assert (await deliver(http, settlement(payment_id))).status_code == 200
    await fresh_db.execute(
        "UPDATE webhook_deliveries SET received_at = now() - interval '169 hours' "
        "WHERE id IN (SELECT id FROM webhook_deliveries LIMIT 2)"
    )
    purged = await purge_with(fresh_database_url)
    assert purged.webhook_deliveries == 2
    assert await fresh_db.fetchval("SELECT count(*) FROM webhook_deliveries") == 1


async def purge_with(dsn: str):
    from orders_svc.db import create_pool

    settings = settings_for(dsn, purge_batch_size=1)
    pool = await create_pool(settings, dsn)
    try:
        return await purge(pool, settings)
    finally:
        await pool.close()
