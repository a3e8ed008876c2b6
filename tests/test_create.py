"""POST /orders: a draft order, created once per Idempotency-Key and replayed byte for byte on retries."""

import json
import uuid
from datetime import timedelta

import asyncpg
import httpx
import pytest

from conftest import test_settings as settings_for
from helpers import confirm, create, tenant_headers
from support import app_client, assert_error, assert_order, count_keys, count_orders, order_row


def key() -> str:
    return uuid.uuid4().hex


async def post(client: httpx.AsyncClient, tenant: str, idem: str | bytes, content: bytes) -> httpx.Response:
    headers = {"X-Tenant-Id": tenant, "Idempotency-Key": idem}
    return await client.post("/orders", headers=headers, content=content)


async def test_create_returns_201_with_location_etag_and_a_draft_order(client, tenant, db):
    response = await create(client, tenant)
    row = await order_row(db, response.json()["id"])
    body = assert_order(response, 201, row)
    assert body["status"] == "draft" and body["version"] == 1 and body["totalCents"] is None
    assert body["tenantId"] == tenant and body["createdAt"] == body["updatedAt"]
    assert response.headers["location"] == f"/orders/{body['id']}"
    assert response.headers["etag"] == '"1"'
    assert "idempotent-replayed" not in response.headers
    assert await count_orders(db, tenant) == 1 and await count_keys(db, tenant) == 1


async def test_create_without_idempotency_key_returns_400_and_creates_nothing(client, tenant, db):
    response = await client.post("/orders", headers=tenant_headers(tenant), json={})
    assert_error(response, 400, "bad_request")
    assert await count_orders(db, tenant) == 0 and await count_keys(db, tenant) == 0


@pytest.mark.parametrize(
    "bad_key",
    ["", '""', "k" * 256, '"' + "k" * 256 + '"', "tab\tkey", "del\x7fkey", b"caf\xe9"],
    ids=["empty", "empty-quoted", "256-chars", "256-chars-quoted", "tab", "del", "latin-1"],
)
async def test_create_with_invalid_idempotency_key_returns_400_and_creates_nothing(
    client, tenant, db, bad_key
):
    assert_error(await post(client, tenant, bad_key, b"{}"), 400, "bad_request")
    assert await count_orders(db, tenant) == 0 and await count_keys(db, tenant) == 0


@pytest.mark.parametrize(
    "good_key", ["k" * 255, '"' + "k" * 255 + '"', " ~!#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}"]
)
async def test_create_accepts_any_key_of_1_to_255_printable_characters(client, tenant, db, good_key):
    response = await post(client, tenant, good_key, b"{}")
    assert response.status_code == 201, response.text
    assert await db.fetchval(
        "SELECT key FROM idempotency_keys WHERE tenant_id = $1", tenant
    ) == good_key.strip('"')


async def test_quoted_idempotency_key_is_the_same_key_as_the_bare_one(client, tenant, db):
    bare = key()
    first = await post(client, tenant, f'"{bare}"', b"{}")
    second = await post(client, tenant, bare, b"{}")
    assert first.status_code == 201 and second.status_code == 200, second.text
    assert second.content == first.content and second.headers["idempotent-replayed"] == "true"
    assert await db.fetchval("SELECT key FROM idempotency_keys WHERE tenant_id = $1", tenant) == bare
    assert await count_orders(db, tenant) == 1


@pytest.mark.parametrize("content", [None, b"", b"{}", b" \n", "own-tenant"], ids=repr)
async def test_create_accepts_an_absent_or_empty_body_or_the_callers_own_tenant_id(
    client, tenant, db, content
):
    headers = tenant_headers(tenant, **{"Idempotency-Key": key()})
    if content == "own-tenant":
        content = f'{{"tenantId": "{tenant}"}}'.encode()
    response = await client.post("/orders", headers=headers, content=content)
    assert_order(response, 201, await order_row(db, response.json()["id"]))
    assert await count_orders(db, tenant) == 1


async def test_create_with_another_tenants_id_in_the_body_returns_403_and_creates_nothing(client, tenant, db):
    response = await create(client, tenant, body={"tenantId": f"{tenant}-other"})
    assert_error(response, 403, "forbidden")
    assert await count_orders(db, tenant) == 0 and await count_keys(db, tenant) == 0
    assert await count_orders(db, f"{tenant}-other") == 0


@pytest.mark.parametrize(
    "body", [{"status": "closed"}, {"tenantId": "x", "extra": 1}, {"tenant_id": "x"}], ids=repr
)
async def test_create_with_an_unknown_field_returns_422_and_creates_nothing(client, tenant, db, body):
    assert_error(await create(client, tenant, body=body), 422, "validation_error")
    assert await count_orders(db, tenant) == 0 and await count_keys(db, tenant) == 0


async def test_create_replay_returns_200_with_the_byte_identical_body_and_same_headers(client, tenant, db):
    idem = key()
    first = await post(client, tenant, idem, b"{}")
    replayed = await post(client, tenant, idem, b"{}")
    assert first.status_code == 201 and replayed.status_code == 200, replayed.text
    assert replayed.content == first.content
    assert replayed.headers["location"] == first.headers["location"]
    assert replayed.headers["etag"] == first.headers["etag"] == '"1"'
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.headers["content-type"] == "application/json"
    assert await count_orders(db, tenant) == 1 and await count_keys(db, tenant) == 1


async def test_create_fingerprint_ignores_key_order_and_whitespace(client, tenant, db):
    idem = key()
    first = await post(client, tenant, idem, f'{{"tenantId":"{tenant}"}}'.encode())
    spaced = await post(client, tenant, idem, f'{{ "tenantId" : "{tenant}" }}\n'.encode())
    assert first.status_code == 201 and spaced.status_code == 200, spaced.text
    assert spaced.content == first.content
    assert await count_orders(db, tenant) == 1


async def test_create_with_a_reused_key_and_a_different_body_returns_409_and_creates_nothing(
    client, tenant, db
):
    idem = key()
    first = await post(client, tenant, idem, b"{}")
    reused = await post(client, tenant, idem, f'{{"tenantId": "{tenant}"}}'.encode())
    assert first.status_code == 201
    assert_error(reused, 409, "conflict", reason="idempotency_key_reused")
    assert await count_orders(db, tenant) == 1 and await count_keys(db, tenant) == 1


async def test_an_expired_key_is_taken_over_by_the_next_request_with_a_new_order(client, tenant, db):
    idem = key()
    first = await post(client, tenant, idem, b"{}")
    await db.execute(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE tenant_id = $1", tenant
    )
    second = await post(client, tenant, idem, b"{}")
    assert first.status_code == 201 and second.status_code == 201, second.text
    assert second.json()["id"] != first.json()["id"] and "idempotent-replayed" not in second.headers
    assert await count_orders(db, tenant) == 2 and await count_keys(db, tenant) == 1
    stored = await db.fetchval("SELECT response_body FROM idempotency_keys WHERE tenant_id = $1", tenant)
    assert stored == second.content
    third = await post(client, tenant, idem, b"{}")
    assert third.status_code == 200 and third.content == second.content


async def test_a_key_lives_one_hour_by_default(client, tenant, db):
    await create(client, tenant)
    lifetime = await db.fetchval(
        "SELECT expires_at - created_at FROM idempotency_keys WHERE tenant_id = $1", tenant
    )
    assert lifetime == timedelta(hours=1)


async def test_a_configured_key_lifetime_is_honoured(database_url, tenant, db):
    async with app_client(settings_for(database_url, idempotency_ttl=timedelta(seconds=7))) as http:
        assert (await create(http, tenant)).status_code == 201
    lifetime = await db.fetchval(
        "SELECT expires_at - created_at FROM idempotency_keys WHERE tenant_id = $1", tenant
    )
    assert lifetime == timedelta(seconds=7)


async def test_a_replay_after_the_order_was_confirmed_returns_the_original_draft(client, tenant, db):
    idem = key()
    first = await post(client, tenant, idem, b"{}")
    assert (await confirm(client, tenant, first.json()["id"], total=500)).status_code == 200
    replayed = await post(client, tenant, idem, b"{}")
    assert replayed.status_code == 200 and replayed.content == first.content
    assert replayed.json()["status"] == "draft" and replayed.json()["version"] == 1
    assert replayed.headers["etag"] == '"1"'
    row = await order_row(db, first.json()["id"])
    assert row is not None and row["status"] == "confirmed" and row["version"] == 2


async def test_a_key_already_used_for_a_confirm_is_reused_when_sent_on_a_create(client, tenant, db):
    order_id = (await post(client, tenant, key(), b"{}")).json()["id"]
    assert (await confirm(client, tenant, order_id, **{"Idempotency-Key": "shared"})).status_code == 200
    assert_error(
        await post(client, tenant, "shared", b"{}"), 409, "conflict", reason="idempotency_key_reused"
    )
    assert await count_orders(db, tenant) == 1


async def test_the_stored_response_is_the_one_sent_and_names_the_created_order(client, tenant, db):
    response = await post(client, tenant, "stored", b"{}")
    stored = await db.fetchrow(
        "SELECT response_status, response_headers, response_body FROM idempotency_keys WHERE tenant_id = $1",
        tenant,
    )
    assert stored["response_status"] == 201 and stored["response_body"] == response.content
    assert json.loads(stored["response_headers"]) == {"etag": '"1"', "location": response.headers["location"]}
    assert_order(response, 201, await order_row(db, response.json()["id"]))


async def test_a_create_whose_order_insert_fails_leaves_no_claimed_key(fresh_database_url):
    tenant = "t-refused"
    async with (
        app_client(settings_for(fresh_database_url)) as http,
        asyncpg.create_pool(fresh_database_url, min_size=1, max_size=2) as db,
    ):
        await db.execute(f"ALTER TABLE orders ADD CONSTRAINT refuse CHECK (tenant_id <> '{tenant}')")
        failed = await post(http, tenant, "k", b"{}")
        assert failed.status_code == 500 and failed.json() == {
            "code": "internal_error",
            "message": "internal error",
        }
        assert await db.fetchval("SELECT count(*) FROM idempotency_keys") == 0
        await db.execute("ALTER TABLE orders DROP CONSTRAINT refuse")
        retried = await post(http, tenant, "k", b"{}")
        assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers
        assert await db.fetchval("SELECT count(*) FROM orders") == 1


async def test_create_with_two_idempotency_keys_returns_400_and_creates_nothing(client, tenant, db):
    headers = [("X-Tenant-Id", tenant), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
    assert_error(await client.post("/orders", headers=headers, content=b"{}"), 400, "bad_request")
    assert await count_orders(db, tenant) == 0


async def key_row_state(db: asyncpg.Pool, tenant: str, idem: str) -> tuple[str, str]:
    """The key row's version identity: (ctid, xmax). A lock or an update changes it; reading never does."""
    row = await db.fetchrow(
        "SELECT ctid::text, xmax::text FROM idempotency_keys WHERE tenant_id = $1 AND key = $2", tenant, idem
    )
    assert row is not None
    return row[0], row[1]


async def test_replays_only_read_the_stored_answer_they_lock_and_write_nothing(client, tenant, db):
    """A retry storm must not turn into writes: a replay neither locks the key row (which would stamp its
    xmax and cost a WAL write and a commit flush) nor updates it (new ctid), on create, confirm or close."""
    created_key, confirm_key, close_key = key(), key(), key()
    order_id = (await create(client, tenant, key=created_key)).json()["id"]
    assert (await confirm(client, tenant, order_id, **{"Idempotency-Key": confirm_key})).status_code == 200
    closed = await client.post(
        f"/orders/{order_id}/close", headers=tenant_headers(tenant, **{"Idempotency-Key": close_key})
    )
    assert closed.status_code == 200
    before = {k: await key_row_state(db, tenant, k) for k in (created_key, confirm_key, close_key)}
    assert all(xmax == "0" for _, xmax in before.values()), before
    for _ in range(3):
        replays = [
            await create(client, tenant, key=created_key),
            await confirm(client, tenant, order_id, **{"Idempotency-Key": confirm_key}),
            await client.post(
                f"/orders/{order_id}/close", headers=tenant_headers(tenant, **{"Idempotency-Key": close_key})
            ),
        ]
        assert [r.headers.get("idempotent-replayed") for r in replays] == ["true"] * 3
    assert {k: await key_row_state(db, tenant, k) for k in before} == before
