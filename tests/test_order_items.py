"""Orders with line items: price snapshots, a total, stock reserved with the order, all lines or none."""

import json
import uuid
from datetime import datetime, timedelta

import asyncpg
import pytest
from catalogue import add_product, lines, order_with, stock_of

from conftest import test_settings as settings_for
from helpers import cancel, close, confirm, create, tenant_headers
from support import app_client, assert_error, count_keys, count_orders, order_row, outbox_rows


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


async def test_an_order_with_items_snapshots_prices_reserves_stock_and_totals(client, tenant, db):
    apple = await add_product(db, tenant, stock=10, price=125, name="Apple")
    pear = await add_product(db, tenant, stock=5, price=300, name="Pear")
    response = await order_with(client, tenant, lines((pear, 2), (apple, 3)))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["totalCents"] == 2 * 300 + 3 * 125 and body["status"] == "draft" and body["version"] == 1
    assert [(i["productId"], i["quantity"], i["lineTotalCents"]) for i in body["items"]] == [
        (pear, 2, 600),
        (apple, 3, 375),
    ]
    assert body["items"][1] == {
        "productId": apple,
        "sku": body["items"][1]["sku"],
        "name": "Apple",
        "unitPriceCents": 125,
        "quantity": 3,
        "lineTotalCents": 375,
    }
    assert parse(body["reservedUntil"]) - parse(body["createdAt"]) == timedelta(seconds=900)
    assert (await stock_of(db, apple), await stock_of(db, pear)) == (7, 3)
    stored = await db.fetch(
        "SELECT * FROM order_items WHERE order_id = $1 ORDER BY line", uuid.UUID(body["id"])
    )
    assert [(str(r["product_id"]), r["quantity"], r["tenant_id"]) for r in stored] == [
        (pear, 2, tenant),
        (apple, 3, tenant),
    ]
    got = await client.get(f"/orders/{body['id']}", headers=tenant_headers(tenant))
    assert got.status_code == 200 and got.json() == body
    page = await client.get("/orders", headers=tenant_headers(tenant))
    assert page.json()["items"] == [body]


async def test_an_order_without_items_has_exactly_the_keys_it_always_had(client, tenant, db):
    await add_product(db, tenant)
    created = await create(client, tenant)
    keys = {"id", "tenantId", "status", "version", "totalCents", "createdAt", "updatedAt"}
    assert created.status_code == 201 and set(created.json()) == keys
    page = await client.get("/orders", headers=tenant_headers(tenant))
    assert [set(o) for o in page.json()["items"]] == [keys]


async def test_a_replay_returns_the_first_answer_and_never_reserves_again(client, tenant, db):
    product = await add_product(db, tenant, stock=4)
    first = await order_with(client, tenant, lines((product, 3)), key="buy-1")
    retry = await order_with(client, tenant, lines((product, 3)), key="buy-1")
    assert first.status_code == 201 and retry.status_code == 200
    assert retry.content == first.content and retry.headers["idempotent-replayed"] == "true"
    assert await stock_of(db, product) == 1 and await count_orders(db, tenant) == 1


async def test_a_price_change_never_touches_an_existing_order(client, tenant, db):
    product = await add_product(db, tenant, price=100)
    body = (await order_with(client, tenant, lines((product, 2)))).json()
    await db.execute(
        "UPDATE products SET price_cents = 999, name = 'Renamed' WHERE id = $1", uuid.UUID(product)
    )
    again = (await client.get(f"/orders/{body['id']}", headers=tenant_headers(tenant))).json()
    assert again["items"] == body["items"] and again["totalCents"] == 200


async def assert_nothing_changed(db, tenant: str, stocks: dict[str, int]) -> None:
    assert await count_orders(db, tenant) == 0 and await count_keys(db, tenant) == 0
    assert {p: await stock_of(db, p) for p in stocks} == stocks
    assert await db.fetchval("SELECT count(*) FROM order_items WHERE tenant_id = $1", tenant) == 0


async def test_not_enough_stock_is_409_naming_each_short_line_and_reserves_nothing(client, tenant, db):
    plenty, scarce, empty = [await add_product(db, tenant, stock=s) for s in (10, 2, 0)]
    response = await order_with(client, tenant, lines((plenty, 5), (scarce, 3), (empty, 1)), key="k")
    body = assert_error(response, 409, "conflict", reason="insufficient_stock")
    assert sorted(body["details"]["items"], key=lambda i: i["available"]) == [
        {"productId": empty, "requested": 1, "available": 0},
        {"productId": scarce, "requested": 3, "available": 2},
    ]
    await assert_nothing_changed(db, tenant, {plenty: 10, scarce: 2, empty: 0})
    # The failed create did not use up its key: the same key with a satisfiable order goes through.
    assert (await order_with(client, tenant, lines((plenty, 5)), key="k")).status_code == 201


async def test_an_unknown_product_is_422_and_an_inactive_one_409_and_nothing_changes(client, tenant, db):
    known = await add_product(db, tenant, stock=3)
    stranger = await add_product(db, f"{tenant}-other", stock=3)  # another tenant's product is unknown here
    inactive = await add_product(db, tenant, stock=3, active=False)
    for product in (str(uuid.uuid4()), stranger):
        response = await order_with(client, tenant, lines((known, 1), (product, 1)))
        body = assert_error(response, 422, "validation_error", reason="unknown_product")
        assert body["details"]["productId"] == product
    response = await order_with(client, tenant, lines((known, 1), (inactive, 1)))
    body = assert_error(response, 409, "conflict", reason="product_inactive")
    assert body["details"]["productId"] == inactive
    await assert_nothing_changed(db, tenant, {known: 3, inactive: 3})
    assert await stock_of(db, stranger) == 3


@pytest.mark.parametrize(
    "items",
    [
        [],
        [{"productId": "p", "quantity": 1}],
        [{"productId": "00000000-0000-0000-0000-000000000001", "quantity": 0}],
        [{"productId": "00000000-0000-0000-0000-000000000001", "quantity": 1001}],
        [{"productId": "00000000-0000-0000-0000-000000000001", "quantity": 1.0}],
        [{"productId": "00000000-0000-0000-0000-000000000001"}],
        [{"productId": f"00000000-0000-0000-0000-{i:012d}", "quantity": 1} for i in range(51)],
        None,
    ],
    ids=["empty", "bad-id", "zero", "1001", "float", "no-quantity", "51-lines", "null"],
)
async def test_lines_of_the_wrong_shape_are_422(client, tenant, db, items):
    headers = tenant_headers(tenant, **{"Idempotency-Key": "k"})
    response = await client.post("/orders", headers=headers, json={"items": items})
    assert_error(response, 422, "validation_error")
    assert await count_orders(db, tenant) == 0


async def test_a_product_listed_twice_is_422(client, tenant, db):
    product = await add_product(db, tenant)
    response = await order_with(client, tenant, lines((product, 1), (product, 2)))
    body = assert_error(response, 422, "validation_error")
    assert body["details"] == {"productId": product}
    assert await stock_of(db, product) == 10


async def test_a_total_past_the_integer_range_is_422_and_changes_nothing(client, tenant, db):
    dear = await add_product(db, tenant, stock=1000, price=2**31 - 1)
    response = await order_with(client, tenant, lines((dear, 2)))
    assert_error(response, 422, "validation_error")
    await assert_nothing_changed(db, tenant, {dear: 1000})


async def test_confirm_of_an_order_with_items_takes_no_total_or_its_own(client, tenant, db):
    product = await add_product(db, tenant, price=500)
    first, second, third = [
        (await order_with(client, tenant, lines((product, 2)))).json()["id"] for _ in range(3)
    ]
    headers = tenant_headers(tenant, **{"If-Match": '"1"'})
    empty = await client.patch(f"/orders/{first}/confirm", headers=headers, json={})
    assert (
        empty.status_code == 200
        and empty.json()["totalCents"] == 1000
        and empty.json()["status"] == "confirmed"
    )
    assert (await confirm(client, tenant, second, total=1000)).status_code == 200
    wrong = await confirm(client, tenant, third, total=999)
    body = assert_error(wrong, 409, "conflict", reason="total_mismatch")
    assert body["details"] == {"reason": "total_mismatch", "expectedTotalCents": 1000}
    row = await order_row(db, third)
    assert row is not None and (row["status"], row["version"], row["total_cents"]) == ("draft", 1, 1000)


async def test_confirm_without_a_total_of_an_order_without_items_is_422(client, tenant, db):
    order_id = (await create(client, tenant)).json()["id"]
    headers = tenant_headers(tenant, **{"If-Match": '"1"'})
    response = await client.patch(f"/orders/{order_id}/confirm", headers=headers, json={})
    assert_error(response, 422, "validation_error")
    row = await order_row(db, order_id)
    assert row is not None and row["status"] == "draft"


@pytest.mark.parametrize("confirmed", [False, True], ids=["draft", "confirmed"])
async def test_cancel_gives_the_stock_back_with_the_state_change_and_the_event(client, tenant, db, confirmed):
    a, b = await add_product(db, tenant, stock=5), await add_product(db, tenant, stock=5)
    order = (await order_with(client, tenant, lines((a, 2), (b, 5)))).json()
    if confirmed:
        assert (
            await client.patch(
                f"/orders/{order['id']}/confirm",
                headers=tenant_headers(tenant, **{"If-Match": '"1"'}),
                json={},
            )
        ).status_code == 200
    assert (await stock_of(db, a), await stock_of(db, b)) == (3, 0)
    response = await cancel(client, tenant, order["id"], {"reason": "changed mind"})
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert response.json()["items"] == order["items"]
    assert (await stock_of(db, a), await stock_of(db, b)) == (5, 5)
    [event] = await outbox_rows(db, order["id"])
    assert json.loads(event["payload"])["reason"] == "changed mind"
    assert_error(await cancel(client, tenant, order["id"]), 409, "conflict", reason="invalid_transition")
    assert (await stock_of(db, a), await stock_of(db, b)) == (5, 5)


@pytest.mark.parametrize("key", [None, "k"], ids=["without a key", "with a key"])
async def test_a_cancel_that_fails_giving_the_stock_back_changes_nothing(fresh_database_url, key):
    """The order's change, its event and the stock back commit together, also without an Idempotency-Key."""
    tenant = "t-refused"
    async with (
        app_client(settings_for(fresh_database_url)) as http,
        asyncpg.create_pool(fresh_database_url, min_size=1, max_size=2) as db,
    ):
        a, b = await add_product(db, tenant, stock=5), await add_product(db, tenant, stock=5)
        order = (await order_with(http, tenant, lines((a, 2), (b, 1)))).json()
        await db.execute("ALTER TABLE products ADD CONSTRAINT refuse CHECK (stock <> 5)")
        headers = {"Idempotency-Key": key} if key else {}
        failed = await cancel(http, tenant, order["id"], {"reason": "changed mind"}, **headers)
        assert failed.status_code == 500 and failed.json()["code"] == "internal_error"
        row = await order_row(db, order["id"])
        assert row is not None and (row["status"], row["version"]) == ("draft", 1)
        assert await outbox_rows(db, order["id"]) == []
        assert (await stock_of(db, a), await stock_of(db, b)) == (3, 4)
        await db.execute("ALTER TABLE products DROP CONSTRAINT refuse")
        retried = await cancel(http, tenant, order["id"], {"reason": "changed mind"}, **headers)
        assert retried.status_code == 200 and retried.json()["status"] == "cancelled"
        assert (await stock_of(db, a), await stock_of(db, b)) == (5, 5)
        assert len(await outbox_rows(db, order["id"])) == 1


async def test_closing_an_order_with_items_keeps_its_stock_taken(client, tenant, db):
    product = await add_product(db, tenant, stock=5)
    order_id = (await order_with(client, tenant, lines((product, 2)))).json()["id"]
    headers = tenant_headers(tenant, **{"If-Match": '"1"'})
    assert (await client.patch(f"/orders/{order_id}/confirm", headers=headers, json={})).status_code == 200
    assert (await close(client, tenant, order_id)).status_code == 200
    assert await stock_of(db, product) == 3


async def test_a_retry_replays_its_answer_even_when_the_product_is_sold_out_or_withdrawn(client, tenant, db):
    product = await add_product(db, tenant, stock=2)
    first = await order_with(client, tenant, lines((product, 2)), key="last-two")
    assert first.status_code == 201 and await stock_of(db, product) == 0
    sold_out = await order_with(client, tenant, lines((product, 2)), key="last-two")
    assert sold_out.status_code == 200 and sold_out.content == first.content
    await db.execute("UPDATE products SET active = false WHERE id = $1", uuid.UUID(product))
    withdrawn = await order_with(client, tenant, lines((product, 2)), key="last-two")
    assert withdrawn.status_code == 200 and withdrawn.content == first.content
    assert await count_orders(db, tenant) == 1 and await stock_of(db, product) == 0
