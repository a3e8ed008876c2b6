"""Asking for a payment, reading payments: tenant-scoped, idempotent, refused as the contract says."""

import asyncio
import uuid

import pytest
from catalogue import stock_of
from payment_helpers import KEY, deliver, events, paid_order, pay, payment_row, settlement

from conftest import test_settings as settings_for
from helpers import cancel, close, confirmed_id, create_id, tenant_headers
from support import app_client, assert_error, order_row, wait_for


@pytest.fixture(scope="module")
async def client(database_url):
    async with app_client(settings_for(database_url, webhook_secrets=(KEY,))) as http:
        yield http


async def test_a_payment_of_a_confirmed_order_is_pending_for_its_total_with_its_request_in_the_outbox(
    client, db, tenant
):
    order_id = await confirmed_id(client, tenant, total=4200)
    response = await pay(client, tenant, order_id)
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"/payments/{body['id']}"
    assert "etag" not in response.headers
    row = await payment_row(db, body["id"])
    assert body == {
        "id": str(row["id"]),
        "orderId": order_id,
        "tenantId": tenant,
        "amountCents": 4200,
        "status": "pending",
        "failureReason": None,
        "createdAt": body["createdAt"],
        "updatedAt": body["createdAt"],
    }
    assert (row["status"], row["amount_cents"], row["tenant_id"]) == ("pending", 4200, tenant)
    assert await events(db, order_id) == [
        (
            "payments.requested",
            {"paymentId": body["id"], "orderId": order_id, "tenantId": tenant, "amountCents": 4200},
        )
    ]
    version = await db.fetchval("SELECT order_version FROM outbox WHERE order_id = $1", uuid.UUID(order_id))
    assert version == 2  # the confirmed order's: asking for a payment does not change the order
    assert (await order_row(db, order_id))["status"] == "confirmed"


async def test_a_retry_with_the_same_key_replays_the_payment_and_asks_once(client, db, tenant):
    order_id = await confirmed_id(client, tenant)
    first = await pay(client, tenant, order_id, key="k1")
    again = await pay(client, tenant, order_id, key="k1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert await db.fetchval("SELECT count(*) FROM payments WHERE order_id = $1", uuid.UUID(order_id)) == 1


async def test_a_second_payment_while_one_is_pending_or_succeeded_is_409_payment_exists(client, db, tenant):
    order_id = await confirmed_id(client, tenant)
    first = (await pay(client, tenant, order_id)).json()
    second = await pay(client, tenant, order_id)
    assert_error(second, 409, "conflict", "payment_exists")
    assert second.json()["details"]["paymentId"] == first["id"]
    assert len(await events(db, order_id)) == 1


async def test_a_payment_needs_the_idempotency_key(client, tenant):
    order_id = await confirmed_id(client, tenant)
    response = await client.post(f"/orders/{order_id}/payments", headers=tenant_headers(tenant))
    assert_error(response, 400, "bad_request")


async def test_only_a_confirmed_order_with_a_total_above_0_can_be_paid(client, db, tenant):
    draft = await create_id(client, tenant)
    free = await confirmed_id(client, tenant, total=0)
    cancelled = await confirmed_id(client, tenant)
    assert (await cancel(client, tenant, cancelled)).status_code == 200
    for order_id, status in [(draft, "draft"), (free, "confirmed"), (cancelled, "cancelled")]:
        response = await pay(client, tenant, order_id, key="same-key")
        assert_error(response, 409, "conflict", "invalid_transition")
        assert response.json()["details"]["currentStatus"] == status
    # A refusal leaves the key unused and nothing written.
    assert (
        await db.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE tenant_id = $1 AND key = 'same-key'", tenant
        )
        == 0
    )
    assert await db.fetchval("SELECT count(*) FROM payments WHERE tenant_id = $1", tenant) == 0


async def test_an_unknown_order_is_404(client, tenant):
    assert_error(await pay(client, tenant, str(uuid.uuid4())), 404, "not_found")
    assert_error(await pay(client, tenant, "not-a-uuid"), 404, "not_found")


async def test_concurrent_payment_requests_for_one_order_make_one_payment(client, db, tenant):
    import asyncio

    for _ in range(5):
        order_id = await confirmed_id(client, tenant)
        answers = await asyncio.gather(*(pay(client, tenant, order_id) for _ in range(8)))
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [201] + [409] * 7, [a.text for a in answers]
        assert (
            await db.fetchval("SELECT count(*) FROM payments WHERE order_id = $1", uuid.UUID(order_id)) == 1
        )
        assert len(await events(db, order_id)) == 1


async def test_a_payment_placed_by_a_concurrent_request_after_the_statement_began_refuses_it_whole(
    fresh_database_url, fresh_db, tenant
):
    """Another request (another process's) inserts the order's payment after this one's statement read the
    order: this one waits for it, then is 409 payment_exists with its key unused and nothing written."""
    async with app_client(settings_for(fresh_database_url, webhook_secrets=(KEY,))) as http:
        order_id = await confirmed_id(http, tenant)
        other = uuid.uuid4()
        async with fresh_db.acquire() as conn:
            held = conn.transaction()
            await held.start()
            await conn.execute(
                "INSERT INTO payments (id, tenant_id, order_id, status, amount_cents, created_at, "
                "updated_at) VALUES ($1, $2, $3, 'pending', 1000, now(), now())",
                other,
                tenant,
                uuid.UUID(order_id),
            )
            request = asyncio.create_task(pay(http, tenant, order_id, key="waits"))
            await wait_for(
                lambda: fresh_db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = 'orders-svc' AND wait_event_type = 'Lock'"
                ),
                timeout=10,
            )
            await held.commit()
            response = await request
    assert_error(response, 409, "conflict", "payment_exists")
    assert response.json()["details"]["paymentId"] == str(other)
    assert await fresh_db.fetchval("SELECT count(*) FROM idempotency_keys WHERE key = 'waits'") == 0
    assert (
        await fresh_db.fetchval("SELECT count(*) FROM payments WHERE order_id = $1", uuid.UUID(order_id)) == 1
    )
    assert await events(fresh_db, order_id) == []


async def test_a_payment_and_the_orders_payments_are_read_back(client, db, tenant):
    order_id, payment_id, _ = await paid_order(client, db, tenant)
    got = await client.get(f"/payments/{payment_id}", headers=tenant_headers(tenant))
    assert got.status_code == 200 and got.json()["id"] == payment_id
    listed = await client.get(f"/orders/{order_id}/payments", headers=tenant_headers(tenant))
    assert listed.status_code == 200 and listed.json() == {"items": [got.json()]}
    unpaid = await confirmed_id(client, tenant)
    empty = await client.get(f"/orders/{unpaid}/payments", headers=tenant_headers(tenant))
    assert empty.status_code == 200 and empty.json() == {"items": []}
    assert_error(
        await client.get(f"/payments/{uuid.uuid4()}", headers=tenant_headers(tenant)), 404, "not_found"
    )
    missing = await client.get(f"/orders/{uuid.uuid4()}/payments", headers=tenant_headers(tenant))
    assert_error(missing, 404, "not_found")


async def test_another_tenant_neither_sees_nor_pays_nor_settles_through_its_own_ids(client, db, tenant):
    order_id, payment_id, product = await paid_order(client, db, tenant)
    stranger = f"{tenant}-x"
    assert_error(
        await client.get(f"/payments/{payment_id}", headers=tenant_headers(stranger)), 404, "not_found"
    )
    listed = await client.get(f"/orders/{order_id}/payments", headers=tenant_headers(stranger))
    assert_error(listed, 404, "not_found")
    assert_error(await pay(client, stranger, order_id), 404, "not_found")
    assert await db.fetchval("SELECT count(*) FROM payments WHERE tenant_id = $1", stranger) == 0
    # The owner's payment is untouched; the owner sees it.
    assert (await payment_row(db, payment_id))["status"] == "pending"
    mine = await client.get(f"/payments/{payment_id}", headers=tenant_headers(tenant))
    assert mine.status_code == 200 and mine.json()["tenantId"] == tenant
    assert await stock_of(db, product) == 8


async def test_a_paid_order_closes_and_cannot_be_cancelled(client, db, tenant):
    order_id, payment_id, product = await paid_order(client, db, tenant)
    assert (await deliver(client, settlement(payment_id))).status_code == 200
    assert_error(await cancel(client, tenant, order_id), 409, "conflict", "invalid_transition")
    closed = await close(client, tenant, order_id, **{"If-Match": '"3"'})
    assert closed.status_code == 200, closed.text
    assert (closed.json()["status"], closed.json()["version"]) == ("closed", 4)
    assert [event for event, _ in await events(db, order_id)] == [
        "payments.requested",
        "orders.paid",
        "orders.closed",
    ]
    assert await stock_of(db, product) == 8  # a paid, closed order keeps its stock taken


async def test_an_orders_payments_are_read_through_the_order_and_payment_indexes(
    fresh_db, fresh_database_url
):
    from orders_svc.queries import payments as queries

    from plans import explain_one as explain

    tenant = "t-plans"
    await fresh_db.execute(
        "INSERT INTO orders (id, tenant_id, status, total_cents, created_at, updated_at) "
        "SELECT gen_random_uuid(), $1, 'confirmed', 100, now(), now() FROM generate_series(1, 20000)",
        tenant,
    )
    await fresh_db.execute(
        "INSERT INTO payments (id, tenant_id, order_id, status, amount_cents, created_at, updated_at) "
        "SELECT gen_random_uuid(), tenant_id, id, 'pending', 100, now(), now() FROM orders "
        "WHERE tenant_id = $1",
        tenant,
    )
    await fresh_db.execute("ANALYZE")
    order_id = await fresh_db.fetchval("SELECT id FROM orders LIMIT 1")
    plan = await explain(fresh_database_url, queries.LIST_ORDER_PAYMENTS, (tenant, order_id))
    assert not [n for n in plan if n["Node Type"] == "Seq Scan"], plan
    assert {"orders_pkey", "payments_tenant_order_idx"} <= {n.get("Index Name") for n in plan}, plan
