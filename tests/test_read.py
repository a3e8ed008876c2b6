"""GET /orders/{id} and GET /orders: one order with its ETag, and keyset pages newest first."""

import base64
import json
import re
import uuid
from datetime import datetime

import pytest

from orders_svc.schemas import rfc3339

from helpers import confirmed_id, create_id, tenant_headers
from support import TIMESTAMP, assert_error, assert_order, order_row


def cursor_of(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def create_many(client, tenant: str, count: int) -> list[str]:
    return [await create_id(client, tenant) for _ in range(count)]


async def newest_first(db, tenant: str) -> list[str]:
    rows = await db.fetch(
        "SELECT id FROM orders WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC", tenant
    )
    return [str(row["id"]) for row in rows]


async def test_get_returns_the_order_with_its_etag(client, tenant, db):
    order_id = await confirmed_id(client, tenant, total=77)
    response = await client.get(f"/orders/{order_id}", headers=tenant_headers(tenant))
    body = assert_order(response, 200, await order_row(db, order_id))
    assert body["status"] == "confirmed" and response.headers["etag"] == '"2"'


@pytest.mark.parametrize("order_id", [str(uuid.uuid4()), "not-a-uuid", "1", "%20"])
async def test_get_of_a_missing_or_non_uuid_order_returns_404(client, tenant, order_id):
    assert_error(await client.get(f"/orders/{order_id}", headers=tenant_headers(tenant)), 404, "not_found")


async def test_list_of_15_orders_pages_into_10_then_5_newest_first(client, tenant, db):
    await create_many(client, tenant, 15)
    first = await client.get("/orders", headers=tenant_headers(tenant))
    assert first.status_code == 200 and first.headers["content-type"] == "application/json"
    page = first.json()
    assert set(page) == {"items", "nextCursor"} and len(page["items"]) == 10
    assert isinstance(page["nextCursor"], str)
    second = await client.get(
        "/orders", params={"cursor": page["nextCursor"]}, headers=tenant_headers(tenant)
    )
    last = second.json()
    assert second.status_code == 200 and len(last["items"]) == 5 and last["nextCursor"] is None
    assert [item["id"] for item in page["items"] + last["items"]] == await newest_first(db, tenant)
    for item in page["items"] + last["items"]:  # each item is exactly the order's representation
        row = await order_row(db, item["id"])
        assert row is not None and row["tenant_id"] == tenant
        assert item == {
            "id": str(row["id"]),
            "tenantId": tenant,
            "status": "draft",
            "version": 1,
            "totalCents": None,
            "createdAt": rfc3339(row["created_at"]),
            "updatedAt": rfc3339(row["updated_at"]),
        }
        assert TIMESTAMP.match(item["createdAt"]) and TIMESTAMP.match(item["updatedAt"]), item


async def test_next_cursor_is_base64url_json_of_the_last_items_timestamp_and_id(client, tenant, db):
    await create_many(client, tenant, 4)
    for limit in (1, 2, 3):
        page = (await client.get("/orders", params={"limit": limit}, headers=tenant_headers(tenant))).json()
        cursor, last = page["nextCursor"], page["items"][-1]
        assert re.fullmatch(r"[A-Za-z0-9_-]+={0,2}", cursor), cursor  # the URL-safe alphabet
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        assert decoded == {"ts": last["createdAt"], "id": last["id"]}
        row = await order_row(db, last["id"])
        assert row is not None and datetime.fromisoformat(decoded["ts"]) == row["created_at"]  # to the µs


async def test_list_returns_no_cursor_when_the_last_page_is_exactly_full(client, tenant):
    await create_many(client, tenant, 3)
    page = (await client.get("/orders", params={"limit": 3}, headers=tenant_headers(tenant))).json()
    assert len(page["items"]) == 3 and page["nextCursor"] is None


async def test_list_honours_limit_and_walks_every_order_exactly_once(client, tenant, db):
    await create_many(client, tenant, 5)
    seen: list[str] = []
    params: dict[str, object] = {"limit": 2}
    for expected_size in (2, 2, 1):
        page = (await client.get("/orders", params=params, headers=tenant_headers(tenant))).json()
        assert len(page["items"]) == expected_size
        seen += [item["id"] for item in page["items"]]
        params["cursor"] = page["nextCursor"]
    assert params["cursor"] is None and seen == await newest_first(db, tenant)


async def test_list_of_a_tenant_without_orders_is_empty(client, tenant):
    response = await client.get("/orders", headers=tenant_headers(tenant))
    assert response.status_code == 200 and response.json() == {"items": [], "nextCursor": None}


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5", "", " 5", "1e1", "٣"])
async def test_list_with_a_bad_limit_returns_400(client, tenant, limit):
    response = await client.get("/orders", params={"limit": limit}, headers=tenant_headers(tenant))
    assert_error(response, 400, "bad_request")


@pytest.mark.parametrize("limit", ["1", "100"])
async def test_list_accepts_limits_from_1_to_100(client, tenant, limit):
    response = await client.get("/orders", params={"limit": limit}, headers=tenant_headers(tenant))
    assert response.status_code == 200 and response.json() == {"items": [], "nextCursor": None}


BAD_CURSORS = {
    "garbage": "!!not base64!!",
    "empty": "",
    "not-json": cursor_of(b"hello"),
    "json-array": cursor_of(b"[1, 2]"),
    "wrong-fields": cursor_of(b'{"a": 1}'),
    "extra-field": cursor_of(
        json.dumps({"ts": "2026-01-01T00:00:00Z", "id": str(uuid.uuid4()), "x": 1}).encode()
    ),
    "bad-id": cursor_of(b'{"ts": "2026-01-01T00:00:00Z", "id": "nope"}'),
    "bad-ts": cursor_of(json.dumps({"ts": "yesterday", "id": str(uuid.uuid4())}).encode()),
    "naive-ts": cursor_of(json.dumps({"ts": "2026-01-01T00:00:00.000001", "id": str(uuid.uuid4())}).encode()),
    "ts-before-year-1": cursor_of(
        json.dumps({"ts": "0001-01-01T00:00:00+01:00", "id": str(uuid.uuid4())}).encode()
    ),
    "ts-after-9999": cursor_of(
        json.dumps({"ts": "9999-12-31T23:59:59-01:00", "id": str(uuid.uuid4())}).encode()
    ),
    "too-long": "A" * 400,
}


@pytest.mark.parametrize("cursor", BAD_CURSORS.values(), ids=BAD_CURSORS.keys())
async def test_list_with_an_undecodable_cursor_returns_400(client, tenant, cursor):
    response = await client.get("/orders", params={"cursor": cursor}, headers=tenant_headers(tenant))
    assert_error(response, 400, "bad_request")


async def test_a_cursor_from_another_tenant_only_ever_pages_the_callers_own_orders(client, tenant, db):
    other = f"{tenant}-b"
    await create_many(client, other, 3)
    mine = await create_many(client, tenant, 3)
    await create_many(client, other, 3)
    foreign = (await client.get("/orders", params={"limit": 1}, headers=tenant_headers(other))).json()
    response = await client.get(
        "/orders", params={"cursor": foreign["nextCursor"]}, headers=tenant_headers(tenant)
    )
    assert response.status_code == 200
    assert [item["id"] for item in response.json()["items"]] == list(reversed(mine))
    assert {item["tenantId"] for item in response.json()["items"]} == {tenant}
