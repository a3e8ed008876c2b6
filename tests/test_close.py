"""POST /orders/{id}/close: confirmed -> closed plus exactly one orders.closed outbox row, atomically."""

import json
import uuid

import asyncpg
import pytest

from conftest import test_settings as settings_for
from helpers import close, confirmed_id, create_id, tenant_headers
from support import (
    BAD_KEYS,
    app_client,
    assert_error,
    assert_order,
    count_keys,
    expire_key,
    order_row,
    outbox_rows,
)


async def assert_not_closed(db, order_id: str, version: int, status: str) -> None:
    row = await order_row(db, order_id)
    assert row is not None and (row["status"], row["version"]) == (status, version)
    assert await outbox_rows(db, order_id) == []


async def test_close_returns_the_closed_order_and_writes_one_outbox_event(client, tenant, db):
    order_id = await confirmed_id(client, tenant, total=2500)
    response = await close(client, tenant, order_id)
    body = assert_order(response, 200, await order_row(db, order_id))
    assert body["id"] == order_id and body["status"] == "closed" and body["version"] == 3
    assert body["totalCents"] == 2500 and response.headers["etag"] == '"3"'
    [event] = await outbox_rows(db, order_id)
    assert event["event_type"] == "orders.closed" and event["tenant_id"] == tenant
    assert event["order_version"] == 3 and event["published_at"] is None
    payload = json.loads(event["payload"])
    assert payload == {
        "orderId": order_id,
        "tenantId": tenant,
        "totalCents": 2500,
        "closedAt": body["updatedAt"],
    }


async def test_close_of_a_draft_returns_409_invalid_transition_and_writes_no_event(client, tenant, db):
    order_id = await create_id(client, tenant)
    assert_error(await close(client, tenant, order_id), 409, "conflict", reason="invalid_transition")
    await assert_not_closed(db, order_id, 1, "draft")


async def test_close_of_a_closed_order_returns_409_invalid_transition_and_keeps_one_event(client, tenant, db):
    order_id = await confirmed_id(client, tenant)
    assert (await close(client, tenant, order_id)).status_code == 200
    again = await close(client, tenant, order_id, **{"If-Match": '"3"'})
    assert_error(again, 409, "conflict", reason="invalid_transition")
    row = await order_row(db, order_id)
    assert row is not None and row["version"] == 3
    assert len(await outbox_rows(db, order_id)) == 1


@pytest.mark.parametrize("if_match", ['"2"', "2", '"1", "2"', "*"])
async def test_close_with_a_matching_if_match_succeeds(client, tenant, db, if_match):
    order_id = await confirmed_id(client, tenant)
    response = await close(client, tenant, order_id, **{"If-Match": if_match})
    assert_order(response, 200, await order_row(db, order_id))
    assert len(await outbox_rows(db, order_id)) == 1


@pytest.mark.parametrize("if_match", ['"1"', '"3"', 'W/"2"'])
async def test_close_with_a_stale_if_match_returns_409_stale_version_and_writes_no_event(
    client, tenant, db, if_match
):
    order_id = await confirmed_id(client, tenant)
    response = await close(client, tenant, order_id, **{"If-Match": if_match})
    assert response.json() == {
        "code": "conflict",
        "message": "stale version",
        "details": {"reason": "stale_version", "currentVersion": 2},
    }
    assert_error(response, 409, "conflict", reason="stale_version")
    await assert_not_closed(db, order_id, 2, "confirmed")


async def test_close_reports_a_stale_version_before_an_invalid_transition(client, tenant, db):
    order_id = await create_id(client, tenant)
    response = await close(client, tenant, order_id, **{"If-Match": '"5"'})
    assert_error(response, 409, "conflict", reason="stale_version")
    await assert_not_closed(db, order_id, 1, "draft")


async def test_close_with_an_unparseable_if_match_returns_400(client, tenant, db):
    order_id = await confirmed_id(client, tenant)
    assert_error(await close(client, tenant, order_id, **{"If-Match": "two"}), 400, "bad_request")
    await assert_not_closed(db, order_id, 2, "confirmed")


@pytest.mark.parametrize("content", [b"", b"{}", b" "], ids=repr)
async def test_close_accepts_an_empty_body_or_an_empty_object(client, tenant, db, content):
    order_id = await confirmed_id(client, tenant)
    response = await client.post(f"/orders/{order_id}/close", headers=tenant_headers(tenant), content=content)
    assert_order(response, 200, await order_row(db, order_id))


@pytest.mark.parametrize("content", [b'{"reason": "x"}', b"[]", b"1"], ids=repr)
async def test_close_with_a_body_of_the_wrong_shape_returns_422_and_writes_no_event(
    client, tenant, db, content
):
    order_id = await confirmed_id(client, tenant)
    response = await client.post(f"/orders/{order_id}/close", headers=tenant_headers(tenant), content=content)
    assert_error(response, 422, "validation_error")
    await assert_not_closed(db, order_id, 2, "confirmed")


@pytest.mark.parametrize("order_id", [str(uuid.uuid4()), "not-a-uuid", "42"])
async def test_close_of_a_missing_or_non_uuid_order_returns_404(client, tenant, order_id):
    assert_error(await close(client, tenant, order_id, **{"If-Match": '"2"'}), 404, "not_found")


async def test_close_retry_with_the_same_idempotency_key_replays_and_keeps_one_event(client, tenant, db):
    order_id = await confirmed_id(client, tenant)
    first = await close(client, tenant, order_id, **{"Idempotency-Key": "close-1"})
    retry = await close(client, tenant, order_id, **{"Idempotency-Key": "close-1"})
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true", retry.text
    assert retry.content == first.content and retry.headers["etag"] == '"3"'
    assert len(await outbox_rows(db, order_id)) == 1
    row = await order_row(db, order_id)
    assert row is not None and row["version"] == 3


async def test_close_with_a_reused_idempotency_key_on_another_order_returns_409(client, tenant, db):
    first_id, second_id = await confirmed_id(client, tenant), await confirmed_id(client, tenant)
    assert (await close(client, tenant, first_id, **{"Idempotency-Key": "k"})).status_code == 200
    reused = await close(client, tenant, second_id, **{"Idempotency-Key": "k"})
    assert_error(reused, 409, "conflict", reason="idempotency_key_reused")
    await assert_not_closed(db, second_id, 2, "confirmed")


async def test_a_close_whose_outbox_write_fails_leaves_the_order_confirmed_and_no_key(fresh_database_url):
    tenant = "t-refused"
    async with (
        app_client(settings_for(fresh_database_url)) as http,
        asyncpg.create_pool(fresh_database_url, min_size=1, max_size=2) as db,
    ):
        order_id = await confirmed_id(http, tenant)
        await db.execute(f"ALTER TABLE outbox ADD CONSTRAINT refuse CHECK (tenant_id <> '{tenant}')")
        failed = await close(http, tenant, order_id, **{"Idempotency-Key": "k"})
        assert failed.status_code == 500 and failed.json()["code"] == "internal_error"
        await assert_not_closed(db, order_id, 2, "confirmed")
        assert await db.fetchval("SELECT count(*) FROM idempotency_keys WHERE key = 'k'") == 0
        await db.execute("ALTER TABLE outbox DROP CONSTRAINT refuse")
        retried = await close(http, tenant, order_id, **{"Idempotency-Key": "k"})
        assert_order(retried, 200, await order_row(db, order_id))
        assert len(await outbox_rows(db, order_id)) == 1


@BAD_KEYS
async def test_close_with_an_invalid_idempotency_key_returns_400_and_writes_nothing(
    client, tenant, db, bad_key
):
    order_id = await confirmed_id(client, tenant)
    response = await close(client, tenant, order_id, **{"Idempotency-Key": bad_key})
    assert_error(response, 400, "bad_request")
    await assert_not_closed(db, order_id, 2, "confirmed")
    assert await count_keys(db, tenant) == 1  # the create's own key; the close claimed none


async def test_a_quoted_idempotency_key_on_close_is_the_same_key_as_the_bare_one(client, tenant, db):
    order_id = await confirmed_id(client, tenant)
    first = await close(client, tenant, order_id, **{"Idempotency-Key": '"abc"'})
    retry = await close(client, tenant, order_id, **{"Idempotency-Key": "abc"})
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers, first.text
    assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true", retry.text
    assert retry.content == first.content and len(await outbox_rows(db, order_id)) == 1
    keys = await db.fetch(
        "SELECT key FROM idempotency_keys WHERE tenant_id = $1 AND key IN ('abc', '\"abc\"')", tenant
    )
    assert [row["key"] for row in keys] == ["abc"]


async def test_an_expired_close_key_is_taken_over_by_the_next_request_with_it(client, tenant, db):
    first_id, second_id = await confirmed_id(client, tenant), await confirmed_id(client, tenant)
    assert (await close(client, tenant, first_id, **{"Idempotency-Key": "k"})).status_code == 200
    await expire_key(db, tenant, "k")
    # A live key would refuse this other request (idempotency_key_reused); an expired one runs it afresh.
    second = await close(client, tenant, second_id, **{"Idempotency-Key": "k"})
    assert_order(second, 200, await order_row(db, second_id))
    assert "idempotent-replayed" not in second.headers and second.json()["status"] == "closed"
    retry = await close(client, tenant, second_id, **{"Idempotency-Key": "k"})
    assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true"
    assert retry.content == second.content
    assert len(await outbox_rows(db, first_id)) == 1 and len(await outbox_rows(db, second_id)) == 1
