"""Another tenant's order is indistinguishable from a missing one, on every endpoint, and is never changed."""

import uuid

import pytest

from helpers import confirmed_id, create_id, tenant_headers
from support import assert_error, count_orders, order_row, outbox_rows

FOREIGN_WRITES = [
    ("PATCH", "/orders/{id}/confirm", {"If-Match": '"1"'}, {"totalCents": 1}),
    ("PATCH", "/orders/{id}", {"If-Match": '"1"'}, {"totalCents": 1}),
    ("PATCH", "/orders/{id}/confirm", {"If-Match": "*"}, {"totalCents": 1}),
    ("PATCH", "/orders/{id}", {}, {"totalCents": 1}),
    ("PATCH", "/orders/{id}/confirm", {"If-Match": '"1"', "Idempotency-Key": "k"}, {"totalCents": 1}),
    ("POST", "/orders/{id}/close", {}, None),
    ("POST", "/orders/{id}/close", {"If-Match": '"2"'}, None),
    ("POST", "/orders/{id}/close", {"If-Match": "*", "Idempotency-Key": "k"}, None),
]


@pytest.fixture
def stranger(tenant: str) -> str:
    return f"{tenant}-stranger"


async def test_getting_another_tenants_order_returns_the_same_404_as_a_missing_one(client, tenant, stranger):
    order_id = await create_id(client, tenant)
    foreign = await client.get(f"/orders/{order_id}", headers=tenant_headers(stranger))
    missing = await client.get(f"/orders/{uuid.uuid4()}", headers=tenant_headers(stranger))
    assert assert_error(foreign, 404, "not_found") == assert_error(missing, 404, "not_found")
    assert "etag" not in foreign.headers


@pytest.mark.parametrize(("method", "path", "extra", "body"), FOREIGN_WRITES)
@pytest.mark.parametrize("state", ["draft", "confirmed"])
async def test_writing_to_another_tenants_order_returns_404_and_changes_nothing(
    client, tenant, stranger, db, method, path, extra, body, state
):
    order_id = await (create_id(client, tenant) if state == "draft" else confirmed_id(client, tenant))
    before = await order_row(db, order_id)
    response = await client.request(
        method, path.format(id=order_id), headers=tenant_headers(stranger, **extra), json=body
    )
    assert_error(response, 404, "not_found")
    assert await order_row(db, order_id) == before
    assert await outbox_rows(db, order_id) == []
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys WHERE tenant_id = $1", stranger) == 0


async def test_listing_never_shows_another_tenants_orders(client, tenant, stranger):
    mine = {await create_id(client, tenant) for _ in range(3)}
    theirs = {await create_id(client, stranger) for _ in range(3)}
    page = (await client.get("/orders", params={"limit": 100}, headers=tenant_headers(tenant))).json()
    assert {item["id"] for item in page["items"]} == mine
    other = (await client.get("/orders", params={"limit": 100}, headers=tenant_headers(stranger))).json()
    assert {item["id"] for item in other["items"]} == theirs


async def test_the_same_idempotency_key_in_two_tenants_creates_two_orders(client, tenant, stranger, db):
    key = {"Idempotency-Key": "shared-key"}
    first = await client.post("/orders", headers=tenant_headers(tenant, **key))
    second = await client.post("/orders", headers=tenant_headers(stranger, **key))
    assert first.status_code == 201 and second.status_code == 201, second.text
    assert first.json()["id"] != second.json()["id"] and "idempotent-replayed" not in second.headers
    assert second.json()["tenantId"] == stranger
    assert await count_orders(db, tenant) == 1 and await count_orders(db, stranger) == 1
    keys = await db.fetch(
        "SELECT tenant_id FROM idempotency_keys WHERE key = 'shared-key' ORDER BY tenant_id"
    )
    assert {row["tenant_id"] for row in keys} >= {tenant, stranger}


async def test_a_key_used_by_another_tenant_for_another_request_is_no_conflict(client, tenant, stranger):
    key = {"Idempotency-Key": f"k-{tenant}"}
    first = await client.post("/orders", headers=tenant_headers(tenant, **key), json={"tenantId": tenant})
    second = await client.post("/orders", headers=tenant_headers(stranger, **key), json={})
    assert first.status_code == 201 and second.status_code == 201, second.text


async def test_a_confirm_key_of_another_tenant_does_not_replay_its_response(client, tenant, stranger, db):
    mine, theirs = await create_id(client, tenant), await create_id(client, stranger)
    key = {"Idempotency-Key": "confirm-key", "If-Match": '"1"'}
    body = {"totalCents": 10}
    mine_confirmed = await client.patch(f"/orders/{mine}", headers=tenant_headers(tenant, **key), json=body)
    foreign = await client.patch(f"/orders/{mine}", headers=tenant_headers(stranger, **key), json=body)
    assert mine_confirmed.status_code == 200
    assert_error(foreign, 404, "not_found")
    theirs_confirmed = await client.patch(
        f"/orders/{theirs}", headers=tenant_headers(stranger, **key), json=body
    )
    assert theirs_confirmed.status_code == 200 and "idempotent-replayed" not in theirs_confirmed.headers
    assert theirs_confirmed.json()["id"] == theirs
    assert (await order_row(db, theirs))["status"] == "confirmed"
