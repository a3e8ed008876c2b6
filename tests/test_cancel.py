"""POST /orders/{id}/cancel: draft | confirmed -> cancelled plus exactly one orders.cancelled outbox row."""

import json
import uuid

import pytest

from helpers import cancel, close, confirm, confirmed_id, create_id, tenant_headers
from support import BAD_KEYS, assert_error, assert_order, count_keys, expire_key, order_row, outbox_rows


async def assert_unchanged(db, order_id: str, version: int, status: str) -> None:
    row = await order_row(db, order_id)
    assert row is not None and (row["status"], row["version"]) == (status, version)
    events = [e["event_type"] for e in await outbox_rows(db, order_id)]
    assert events == ([f"orders.{status}"] if status in ("closed", "cancelled") else [])


@pytest.mark.parametrize("confirmed", [False, True], ids=["draft", "confirmed"])
async def test_cancel_returns_the_cancelled_order_and_writes_one_event(client, tenant, db, confirmed):
    order_id = await (confirmed_id if confirmed else create_id)(client, tenant)
    response = await cancel(client, tenant, order_id, {"reason": "customer changed their mind"})
    body = assert_order(response, 200, await order_row(db, order_id))
    version = 3 if confirmed else 2
    assert body["status"] == "cancelled" and body["version"] == version
    assert response.headers["etag"] == f'"{version}"'
    [event] = await outbox_rows(db, order_id)
    assert (event["event_type"], event["tenant_id"], event["order_version"]) == (
        "orders.cancelled",
        tenant,
        version,
    )
    assert json.loads(event["payload"]) == {
        "orderId": order_id,
        "tenantId": tenant,
        "reason": "customer changed their mind",
        "cancelledAt": body["updatedAt"],
    }


@pytest.mark.parametrize("content", [b"", b"{}", b'{"reason": null}'], ids=repr)
async def test_cancel_without_a_reason_records_a_null_reason(client, tenant, db, content):
    order_id = await create_id(client, tenant)
    response = await client.post(
        f"/orders/{order_id}/cancel", headers=tenant_headers(tenant), content=content
    )
    assert_order(response, 200, await order_row(db, order_id))
    [event] = await outbox_rows(db, order_id)
    assert json.loads(event["payload"])["reason"] is None


@pytest.mark.parametrize("final", ["closed", "cancelled"])
async def test_cancel_of_a_closed_or_cancelled_order_returns_409_invalid_transition(
    client, tenant, db, final
):
    order_id = await confirmed_id(client, tenant)
    ended = await (close(client, tenant, order_id) if final == "closed" else cancel(client, tenant, order_id))
    assert ended.status_code == 200
    body = assert_error(await cancel(client, tenant, order_id), 409, "conflict", reason="invalid_transition")
    assert body["details"]["currentStatus"] == final
    assert body["message"] == f"cannot cancel an order that is {final}"
    row = await order_row(db, order_id)
    assert row is not None and (row["status"], row["version"]) == (final, 3)
    assert len(await outbox_rows(db, order_id)) == 1


async def test_a_cancelled_order_can_be_neither_confirmed_nor_closed(client, tenant, db):
    order_id = await create_id(client, tenant)
    assert (await cancel(client, tenant, order_id)).status_code == 200
    refused = await confirm(client, tenant, order_id, if_match='"2"')
    assert_error(refused, 409, "conflict", reason="invalid_transition")
    assert_error(await close(client, tenant, order_id), 409, "conflict", reason="invalid_transition")
    await assert_unchanged(db, order_id, 2, "cancelled")
    assert len(await outbox_rows(db, order_id)) == 1


@pytest.mark.parametrize("if_match", ['"2"', "2", '"1", "2"', "*"])
async def test_cancel_with_a_matching_if_match_succeeds(client, tenant, db, if_match):
    order_id = await confirmed_id(client, tenant)
    response = await cancel(client, tenant, order_id, **{"If-Match": if_match})
    assert_order(response, 200, await order_row(db, order_id))


@pytest.mark.parametrize("if_match", ['"1"', '"3"', 'W/"2"'])
async def test_cancel_with_a_stale_if_match_returns_409_and_changes_nothing(client, tenant, db, if_match):
    order_id = await confirmed_id(client, tenant)
    response = await cancel(client, tenant, order_id, **{"If-Match": if_match})
    assert response.json() == {
        "code": "conflict",
        "message": "stale version",
        "details": {"reason": "stale_version", "currentVersion": 2},
    }
    await assert_unchanged(db, order_id, 2, "confirmed")


@pytest.mark.parametrize(
    "content",
    [b'{"reason": 1}', b'{"reason": "' + b"x" * 201 + b'"}', b'{"why": "x"}', b"[]"],
    ids=["number", "201-chars", "unknown-field", "array"],
)
async def test_cancel_with_a_body_of_the_wrong_shape_returns_422_and_changes_nothing(
    client, tenant, db, content
):
    order_id = await confirmed_id(client, tenant)
    response = await client.post(
        f"/orders/{order_id}/cancel", headers=tenant_headers(tenant), content=content
    )
    assert_error(response, 422, "validation_error")
    await assert_unchanged(db, order_id, 2, "confirmed")


async def test_a_reason_of_200_characters_is_accepted(client, tenant, db):
    order_id = await create_id(client, tenant)
    assert (await cancel(client, tenant, order_id, {"reason": "é" * 200})).status_code == 200


@pytest.mark.parametrize("order_id", [str(uuid.uuid4()), "not-a-uuid"])
async def test_cancel_of_a_missing_order_returns_404(client, tenant, order_id):
    assert_error(await cancel(client, tenant, order_id), 404, "not_found")


async def test_cancel_of_another_tenants_order_returns_404_and_changes_nothing(client, tenant, db):
    order_id = await create_id(client, tenant)
    assert_error(await cancel(client, f"{tenant}-other", order_id), 404, "not_found")
    await assert_unchanged(db, order_id, 1, "draft")


async def test_a_cancel_retried_with_its_key_replays_and_writes_one_event(client, tenant, db):
    order_id = await confirmed_id(client, tenant)
    first = await cancel(client, tenant, order_id, {"reason": "r"}, **{"Idempotency-Key": "cancel-1"})
    retry = await cancel(client, tenant, order_id, {"reason": "r"}, **{"Idempotency-Key": "cancel-1"})
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true"
    assert retry.content == first.content
    assert len(await outbox_rows(db, order_id)) == 1
    other_reason = await cancel(client, tenant, order_id, {"reason": "s"}, **{"Idempotency-Key": "cancel-1"})
    assert_error(other_reason, 409, "conflict", reason="idempotency_key_reused")


async def test_a_refused_cancel_does_not_use_up_its_key(client, tenant, db):
    order_id = await confirmed_id(client, tenant)
    stale = await cancel(client, tenant, order_id, **{"Idempotency-Key": "k", "If-Match": '"1"'})
    assert_error(stale, 409, "conflict", reason="stale_version")
    assert await count_keys(db, tenant) == 1  # the create's own
    fresh = await cancel(client, tenant, order_id, **{"Idempotency-Key": "k2", "If-Match": '"2"'})
    assert_order(fresh, 200, await order_row(db, order_id))


async def test_an_expired_cancel_key_is_taken_over(client, tenant, db):
    first_id, second_id = await create_id(client, tenant), await create_id(client, tenant)
    assert (await cancel(client, tenant, first_id, **{"Idempotency-Key": "k"})).status_code == 200
    await expire_key(db, tenant, "k")
    second = await cancel(client, tenant, second_id, **{"Idempotency-Key": "k"})
    assert_order(second, 200, await order_row(db, second_id))
    assert "idempotent-replayed" not in second.headers


@BAD_KEYS
async def test_cancel_with_an_invalid_idempotency_key_returns_400(client, tenant, db, bad_key):
    order_id = await create_id(client, tenant)
    assert_error(await cancel(client, tenant, order_id, **{"Idempotency-Key": bad_key}), 400, "bad_request")
    await assert_unchanged(db, order_id, 1, "draft")
