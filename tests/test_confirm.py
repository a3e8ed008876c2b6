"""PATCH /orders/{id}/confirm and PATCH /orders/{id}: draft -> confirmed under optimistic locking."""

import uuid

import asyncpg
import pytest

from conftest import test_settings as settings_for
from helpers import close, confirm, confirmed_id, create_id, tenant_headers
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

PATHS = pytest.mark.parametrize("path", ["/orders/{id}/confirm", "/orders/{id}"], ids=["confirm", "bare"])


async def assert_unchanged(db, order_id: str, version: int = 1, status: str = "draft") -> None:
    row = await order_row(db, order_id)
    assert row is not None and row["version"] == version and row["status"] == status


@PATHS
async def test_confirm_returns_200_with_version_2_etag_and_the_total(client, tenant, db, path):
    order_id = await create_id(client, tenant)
    response = await confirm(client, tenant, order_id, total=4321, path=path)
    body = assert_order(response, 200, await order_row(db, order_id))
    assert body["status"] == "confirmed" and body["version"] == 2 and body["totalCents"] == 4321
    assert response.headers["etag"] == '"2"' and body["updatedAt"] >= body["createdAt"]
    assert await count_keys(db, tenant) == 1  # the create's; a confirm without a key stores nothing


@PATHS
@pytest.mark.parametrize("if_match", ['"1"', "1", '"5", "1"', "*", ' "1" ', '"3",1'])
async def test_confirm_accepts_every_if_match_form_naming_the_current_version(
    client, tenant, db, path, if_match
):
    order_id = await create_id(client, tenant)
    response = await confirm(client, tenant, order_id, if_match=if_match, path=path)
    assert_order(response, 200, await order_row(db, order_id))
    assert response.json()["version"] == 2


@PATHS
async def test_confirm_with_a_weak_etag_returns_409_stale_version(client, tenant, db, path):
    order_id = await create_id(client, tenant)
    response = await confirm(client, tenant, order_id, if_match='W/"1"', path=path)
    body = assert_error(response, 409, "conflict", reason="stale_version")
    assert body["details"]["currentVersion"] == 1
    await assert_unchanged(db, order_id)


@PATHS
@pytest.mark.parametrize("if_match", ["abc", '"1', '1"', '"a"', "1 2", "1,,2", '"1" *', "W/", "12345678901"])
async def test_confirm_with_an_unparseable_if_match_returns_400(client, tenant, db, path, if_match):
    order_id = await create_id(client, tenant)
    assert_error(await confirm(client, tenant, order_id, if_match=if_match, path=path), 400, "bad_request")
    await assert_unchanged(db, order_id)


@PATHS
async def test_confirm_without_if_match_returns_428(client, tenant, db, path):
    order_id = await create_id(client, tenant)
    assert_error(
        await confirm(client, tenant, order_id, if_match=None, path=path), 428, "precondition_required"
    )
    await assert_unchanged(db, order_id)


@PATHS
async def test_confirm_without_if_match_of_a_missing_order_returns_404(client, tenant, path):
    response = await confirm(client, tenant, str(uuid.uuid4()), if_match=None, path=path)
    assert_error(response, 404, "not_found")


@PATHS
async def test_confirm_with_a_stale_version_returns_the_exact_409_body(client, tenant, db, path):
    order_id = await create_id(client, tenant)
    response = await confirm(client, tenant, order_id, if_match='"7"', path=path)
    assert response.status_code == 409
    assert response.json() == {
        "code": "conflict",
        "message": "stale version",
        "details": {"reason": "stale_version", "currentVersion": 1},
    }
    await assert_unchanged(db, order_id)


@PATHS
async def test_confirming_a_confirmed_order_at_its_current_version_returns_409_invalid_transition(
    client, tenant, db, path
):
    order_id = await confirmed_id(client, tenant, total=100)
    response = await confirm(client, tenant, order_id, if_match='"2"', total=999, path=path)
    assert_error(response, 409, "conflict", reason="invalid_transition")
    row = await order_row(db, order_id)
    assert row is not None and row["version"] == 2 and row["total_cents"] == 100


@PATHS
@pytest.mark.parametrize("if_match", ['"3"', "*"])
async def test_confirming_a_closed_order_at_its_current_version_returns_409_invalid_transition(
    client, tenant, db, path, if_match
):
    order_id = await confirmed_id(client, tenant, total=100)
    assert (await close(client, tenant, order_id)).status_code == 200
    response = await confirm(client, tenant, order_id, if_match=if_match, total=999, path=path)
    assert_error(response, 409, "conflict", reason="invalid_transition")
    row = await order_row(db, order_id)
    assert row is not None and (row["status"], row["version"], row["total_cents"]) == ("closed", 3, 100)
    assert len(await outbox_rows(db, order_id)) == 1


@PATHS
async def test_confirm_reports_a_stale_version_before_an_invalid_transition(client, tenant, db, path):
    order_id = await confirmed_id(client, tenant)
    body = assert_error(await confirm(client, tenant, order_id, path=path), 409, "conflict", "stale_version")
    assert body["details"]["currentVersion"] == 2
    await assert_unchanged(db, order_id, version=2, status="confirmed")


@PATHS
@pytest.mark.parametrize("if_match", ['"1"', '"9"', 'W/"1"', "*"])
async def test_confirm_of_a_missing_order_returns_404_whatever_the_version(client, tenant, path, if_match):
    response = await confirm(client, tenant, str(uuid.uuid4()), if_match=if_match, path=path)
    assert_error(response, 404, "not_found")


@PATHS
@pytest.mark.parametrize(
    "body",
    [
        {"totalCents": "100"},
        {"totalCents": 1.5},
        {"totalCents": 100.0},
        {"totalCents": True},
        {"totalCents": -1},
        {"totalCents": 2**31},
        {"totalCents": None},
        {},
        {"totalCents": 1, "status": "closed"},
        [100],
        "100",
    ],
    ids=repr,
)
async def test_confirm_with_a_body_of_the_wrong_shape_returns_422_and_changes_nothing(
    client, tenant, db, path, body
):
    order_id = await create_id(client, tenant)
    headers = tenant_headers(tenant, **{"If-Match": '"1"'})
    response = await client.patch(path.format(id=order_id), headers=headers, json=body)
    assert_error(response, 422, "validation_error")
    await assert_unchanged(db, order_id)
    assert (await order_row(db, order_id))["total_cents"] is None


@PATHS
@pytest.mark.parametrize("total", [0, 2**31 - 1])
async def test_confirm_accepts_the_bounds_of_total_cents(client, tenant, db, path, total):
    order_id = await create_id(client, tenant)
    response = await confirm(client, tenant, order_id, total=total, path=path)
    assert_order(response, 200, await order_row(db, order_id))
    assert response.json()["totalCents"] == total


@PATHS
@pytest.mark.parametrize("bad_id", ["123", "not-a-uuid", "0" * 33])
async def test_confirm_of_a_non_uuid_id_returns_404(client, tenant, path, bad_id):
    assert_error(await confirm(client, tenant, bad_id, path=path), 404, "not_found")


@PATHS
async def test_confirm_retry_with_the_same_idempotency_key_replays_without_a_second_bump(
    client, tenant, db, path
):
    order_id = await create_id(client, tenant)
    first = await confirm(client, tenant, order_id, path=path, **{"Idempotency-Key": "confirm-1"})
    retry = await confirm(client, tenant, order_id, path=path, **{"Idempotency-Key": "confirm-1"})
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true", retry.text
    assert retry.content == first.content and retry.headers["etag"] == '"2"'
    await assert_unchanged(db, order_id, version=2, status="confirmed")


async def test_both_confirm_paths_share_one_idempotency_fingerprint(client, tenant, db):
    order_id = await create_id(client, tenant)
    first = await confirm(client, tenant, order_id, path="/orders/{id}", **{"Idempotency-Key": "k"})
    retry = await confirm(client, tenant, order_id, path="/orders/{id}/confirm", **{"Idempotency-Key": "k"})
    assert first.status_code == 200 and retry.status_code == 200 and retry.content == first.content
    assert retry.headers["idempotent-replayed"] == "true"
    await assert_unchanged(db, order_id, version=2, status="confirmed")


@PATHS
async def test_confirm_with_a_reused_idempotency_key_and_another_body_returns_409(client, tenant, db, path):
    order_id = await create_id(client, tenant)
    first = await confirm(client, tenant, order_id, total=10, path=path, **{"Idempotency-Key": "k"})
    reused = await confirm(client, tenant, order_id, total=20, path=path, **{"Idempotency-Key": "k"})
    assert first.status_code == 200
    assert_error(reused, 409, "conflict", reason="idempotency_key_reused")
    row = await order_row(db, order_id)
    assert row is not None and row["version"] == 2 and row["total_cents"] == 10


async def test_a_failed_confirm_does_not_consume_its_idempotency_key(client, tenant, db):
    order_id = await create_id(client, tenant)
    stale = await confirm(client, tenant, order_id, if_match='"9"', **{"Idempotency-Key": "k"})
    assert_error(stale, 409, "conflict", reason="stale_version")
    retry = await confirm(client, tenant, order_id, if_match='"9"', **{"Idempotency-Key": "k"})
    assert_error(retry, 409, "conflict", reason="stale_version")
    fixed = await confirm(client, tenant, order_id, if_match='"1"', **{"Idempotency-Key": "k"})
    assert_order(fixed, 200, await order_row(db, order_id))


async def test_a_keyed_confirm_that_fails_midway_leaves_neither_the_key_nor_a_change(fresh_database_url):
    tenant = "t-refused"
    async with (
        app_client(settings_for(fresh_database_url)) as http,
        asyncpg.create_pool(fresh_database_url, min_size=1, max_size=2) as db,
    ):
        order_id = await create_id(http, tenant)
        await db.execute("ALTER TABLE orders ADD CONSTRAINT refuse CHECK (total_cents IS DISTINCT FROM 13)")
        failed = await confirm(http, tenant, order_id, total=13, **{"Idempotency-Key": "k"})
        assert failed.status_code == 500 and failed.json()["code"] == "internal_error"
        await assert_unchanged(db, order_id)
        assert await db.fetchval("SELECT count(*) FROM idempotency_keys WHERE key = 'k'") == 0
        await db.execute("ALTER TABLE orders DROP CONSTRAINT refuse")
        retried = await confirm(http, tenant, order_id, total=13, **{"Idempotency-Key": "k"})
        assert retried.status_code == 200 and "idempotent-replayed" not in retried.headers
        assert_order(retried, 200, await order_row(db, order_id))


async def test_if_match_split_over_two_header_lines_is_one_list(client, tenant, db):
    order_id = await create_id(client, tenant)
    headers = [("X-Tenant-Id", tenant), ("If-Match", '"7"'), ("If-Match", '"1"')]
    response = await client.patch(f"/orders/{order_id}/confirm", headers=headers, json={"totalCents": 5})
    assert response.status_code == 200, response.text
    assert (await order_row(db, order_id))["version"] == 2


@PATHS
@BAD_KEYS
async def test_confirm_with_an_invalid_idempotency_key_returns_400_and_changes_nothing(
    client, tenant, db, path, bad_key
):
    order_id = await create_id(client, tenant)
    response = await confirm(client, tenant, order_id, path=path, **{"Idempotency-Key": bad_key})
    assert_error(response, 400, "bad_request")
    await assert_unchanged(db, order_id)
    assert await count_keys(db, tenant) == 1  # the create's own key; the confirm claimed none


@PATHS
async def test_a_quoted_idempotency_key_on_confirm_is_the_same_key_as_the_bare_one(client, tenant, db, path):
    order_id = await create_id(client, tenant)
    first = await confirm(client, tenant, order_id, path=path, **{"Idempotency-Key": '"abc"'})
    retry = await confirm(client, tenant, order_id, path=path, **{"Idempotency-Key": "abc"})
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers, first.text
    assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true", retry.text
    assert retry.content == first.content
    await assert_unchanged(db, order_id, version=2, status="confirmed")
    keys = await db.fetch(
        "SELECT key FROM idempotency_keys WHERE tenant_id = $1 AND key IN ('abc', '\"abc\"')", tenant
    )
    assert [row["key"] for row in keys] == ["abc"]


async def test_an_expired_confirm_key_is_taken_over_by_the_next_request_with_it(client, tenant, db):
    first_id, second_id = await create_id(client, tenant), await create_id(client, tenant)
    first = await confirm(client, tenant, first_id, total=10, **{"Idempotency-Key": "k"})
    assert first.status_code == 200, first.text
    await expire_key(db, tenant, "k")
    # A live key would refuse this other request (idempotency_key_reused); an expired one runs it afresh.
    second = await confirm(client, tenant, second_id, total=20, **{"Idempotency-Key": "k"})
    assert_order(second, 200, await order_row(db, second_id))
    assert "idempotent-replayed" not in second.headers and second.json()["totalCents"] == 20
    retry = await confirm(client, tenant, second_id, total=20, **{"Idempotency-Key": "k"})
    assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true"
    assert retry.content == second.content
    await assert_unchanged(db, second_id, version=2, status="confirmed")
    row = await order_row(db, first_id)
    assert row is not None and (row["version"], row["total_cents"]) == (2, 10)


async def test_an_if_match_list_longer_than_64_versions_is_400_before_any_work(client, tenant, db):
    """A list header is bounded: a 10,000-member If-Match would be parsed, sent to the database as an array
    and compared against, for nothing a client needs."""
    order_id = await create_id(client, tenant)
    many = ", ".join(f'"{n}"' for n in range(1, 66))
    response = await confirm(client, tenant, order_id, if_match=many)
    body = assert_error(response, 400, "bad_request")
    assert "64" in body["message"]
    assert (
        await confirm(client, tenant, order_id, if_match=", ".join(f'"{n}"' for n in range(1, 65)))
    ).status_code == 200
