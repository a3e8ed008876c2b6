"""Every non-2xx is {code, message, details?} with one code per status, and never leaks internals."""

import re
import uuid
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest

from conftest import test_settings as settings_for
from helpers import confirmed_id, create_id, tenant_headers
from support import app_client, assert_error, assert_no_leak, count_keys, count_orders, order_row

MAX_BODY = 64 * 1024


def keyed(tenant: str, **extra: str) -> dict[str, str]:
    return tenant_headers(tenant, **{"Idempotency-Key": uuid.uuid4().hex}, **extra)


async def test_an_unknown_route_returns_404_in_the_envelope(client, tenant):
    for path in ("/nope", "/orders/1/2/3", "/orders/", "/ORDERS", "/docs/static/nope.js", "/docs/static/"):
        assert_error(await client.get(path, headers=tenant_headers(tenant)), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/orders", {"GET", "HEAD", "POST"}),
        ("PUT", "/orders/{id}", {"GET", "HEAD", "PATCH"}),
        ("DELETE", "/orders/{id}", {"GET", "HEAD", "PATCH"}),
        ("GET", "/orders/{id}/close", {"POST"}),
        ("POST", "/orders/{id}/confirm", {"PATCH"}),
        ("POST", "/healthz", {"GET", "HEAD"}),
        ("POST", "/docs/static/swagger-ui.css", {"GET", "HEAD"}),
    ],
)
async def test_a_wrong_method_returns_405_in_the_envelope_with_every_allowed_method(
    client, tenant, method, path, allowed
):
    response = await client.request(method, path.format(id=uuid.uuid4()), headers=tenant_headers(tenant))
    assert_error(response, 405, "method_not_allowed")
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed


@pytest.mark.parametrize(
    "content", [b"{", b"{'a': 1}", b"nul", b'{"a":}', b"\xff\xfe", b"{}{}", b"{} x"], ids=repr
)
async def test_malformed_json_returns_400_on_every_write_and_changes_nothing(client, tenant, db, content):
    order_id = await confirmed_id(client, tenant)
    assert_error(await client.post("/orders", headers=keyed(tenant), content=content), 400, "bad_request")
    for path in (f"/orders/{order_id}/confirm", f"/orders/{order_id}"):
        response = await client.patch(
            path, headers=tenant_headers(tenant, **{"If-Match": "*"}), content=content
        )
        assert_error(response, 400, "bad_request")
    response = await client.post(f"/orders/{order_id}/close", headers=tenant_headers(tenant), content=content)
    assert_error(response, 400, "bad_request")
    row = await order_row(db, order_id)
    assert row is not None and row["version"] == 2 and await count_orders(db, tenant) == 1


@pytest.mark.parametrize(
    "content",
    [b"[]", b'"str"', b"1", b"null", b"true", b'{"unknown": 1}', b'{"tenantId": 5}', b'{"tenantId": "a b"}'],
    ids=repr,
)
async def test_create_with_json_of_the_wrong_shape_returns_422_and_creates_nothing(
    client, tenant, db, content
):
    assert_error(
        await client.post("/orders", headers=keyed(tenant), content=content), 422, "validation_error"
    )
    assert await count_orders(db, tenant) == 0 and await count_keys(db, tenant) == 0


@pytest.mark.parametrize(
    "content",
    [
        b'{"totalCents": "1"}',
        b'{"totalCents": 1.0}',
        b'{"totalCents": false}',
        b'{"totalCents": -5}',
        b'{"totalCents": 2147483648}',
        b'{"totalCents": 1e3}',
        b'{"totalCents": 99999999999999999999999}',
    ],
    ids=repr,
)
async def test_confirm_with_json_of_the_wrong_shape_returns_422_and_changes_nothing(
    client, tenant, db, content
):
    order_id = await create_id(client, tenant)
    headers = tenant_headers(tenant, **{"If-Match": '"1"'})
    body = assert_error(
        await client.patch(f"/orders/{order_id}", headers=headers, content=content), 422, "validation_error"
    )
    assert "totalCents" in body["message"]
    row = await order_row(db, order_id)
    assert row is not None and row["version"] == 1 and row["total_cents"] is None


async def test_a_body_over_64_kib_with_content_length_returns_413_and_creates_nothing(client, tenant, db):
    content = b"{}" + b" " * (MAX_BODY - 1)
    response = await client.post("/orders", headers=keyed(tenant), content=content)
    assert_error(response, 413, "payload_too_large")
    assert await count_orders(db, tenant) == 0 and await count_keys(db, tenant) == 0


async def test_a_chunked_body_over_64_kib_without_content_length_returns_413(client, tenant, db):
    async def chunks() -> AsyncIterator[bytes]:
        yield b"{"
        for _ in range(20):
            yield b" " * 4096
        yield b"}"

    response = await client.post("/orders", headers=keyed(tenant), content=chunks())
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "payload_too_large")
    order_id = await confirmed_id(client, tenant)
    response = await client.post(
        f"/orders/{order_id}/close", headers=tenant_headers(tenant), content=chunks()
    )
    assert_error(response, 413, "payload_too_large")
    assert await count_orders(db, tenant) == 1
    assert (await order_row(db, order_id))["status"] == "confirmed"


@pytest.mark.parametrize("path", ["/orders/{id}/confirm", "/orders/{id}"], ids=["confirm", "bare"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_confirm_body_over_64_kib_returns_413_and_changes_nothing(client, tenant, db, path, chunked):
    order_id = await create_id(client, tenant)
    content = b'{"totalCents": 5}' + b" " * MAX_BODY  # valid JSON that would confirm, were it not too big

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(content), 4096):
            yield content[start : start + 4096]

    headers = tenant_headers(tenant, **{"If-Match": '"1"', "Idempotency-Key": "big"})
    response = await client.patch(
        path.format(id=order_id), headers=headers, content=chunks() if chunked else content
    )
    assert ("content-length" in response.request.headers) is not chunked
    assert_error(response, 413, "payload_too_large")
    row = await order_row(db, order_id)
    assert row is not None and (row["status"], row["version"], row["total_cents"]) == ("draft", 1, None)
    assert await count_keys(db, tenant) == 1  # the create's own key


async def test_a_body_of_exactly_64_kib_is_accepted(client, tenant, db):
    content = b"{}" + b" " * (MAX_BODY - 2)
    response = await client.post("/orders", headers=keyed(tenant), content=content)
    assert response.status_code == 201, response.text
    assert await count_orders(db, tenant) == 1


async def test_a_missing_if_match_returns_428_in_the_envelope(client, tenant):
    order_id = await create_id(client, tenant)
    response = await client.patch(
        f"/orders/{order_id}/confirm", headers=tenant_headers(tenant), json={"totalCents": 1}
    )
    assert_error(response, 428, "precondition_required")


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", None, "application/xml"]
)
async def test_bodies_are_parsed_as_json_whatever_the_content_type(client, tenant, db, content_type):
    extra = {} if content_type is None else {"Content-Type": content_type}
    created = await client.post("/orders", headers=keyed(tenant, **extra), content=b"{}")
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]
    headers = tenant_headers(tenant, **{"If-Match": '"1"', **extra})
    confirmed = await client.patch(
        f"/orders/{order_id}/confirm", headers=headers, content=b'{"totalCents": 5}'
    )
    assert confirmed.status_code == 200, confirmed.text
    row = await order_row(db, order_id)
    assert row is not None and row["total_cents"] == 5


async def test_no_malformed_request_ever_gets_a_500_or_a_leak(client, tenant):
    order_id = await create_id(client, tenant)
    strange = [
        ("POST", "/orders", {"Idempotency-Key": "k" * 10_000}, b"{}"),
        ("POST", "/orders", {"Idempotency-Key": "k"}, b'{"tenantId": "' + b"x" * 60_000 + b'"}'),
        ("POST", "/orders", {"Idempotency-Key": "k2"}, b"[" * 10_000),
        ("POST", "/orders", {"Idempotency-Key": "k3"}, b'{"tenantId": "\\u0000"}'),
        ("PATCH", f"/orders/{order_id}", {"If-Match": '"1"' + ", 1" * 2000}, b'{"totalCents": 1}'),
        ("PATCH", f"/orders/{order_id}", {"If-Match": '"99999999999999999999"'}, b'{"totalCents": 1}'),
        ("PATCH", f"/orders/{order_id}", {"If-Match": '"0"'}, b'{"totalCents": 1}'),
        ("PATCH", f"/orders/{order_id}", {"If-Match": "1"}, b'{"totalCents": 1, "totalCents": "x"}'),
        ("PATCH", "/orders/" + "%00" * 30, {"If-Match": "1"}, b'{"totalCents": 1}'),
        ("GET", "/orders?limit=99999999999999999999999", {}, b""),
        ("GET", "/orders?cursor=%00%00", {}, b""),
        ("GET", "/orders?cursor=" + "A" * 10_000, {}, b""),
        ("GET", "/orders/" + "9" * 5000, {}, b""),
        ("POST", f"/orders/{order_id}/close", {"Idempotency-Key": "\x01"}, b""),
    ]
    for method, path, extra, content in strange:
        response = await client.request(
            method, path, headers=tenant_headers(tenant, **extra), content=content
        )
        assert 400 <= response.status_code < 500 or response.status_code == 200, (path, response.text)
        assert_no_leak(response)
        if response.status_code >= 400:
            assert set(response.json()) <= {"code", "message", "details"}


async def test_an_unexpected_failure_returns_a_500_envelope_without_internals(fresh_database_url):
    tenant = "t-broken"
    async with app_client(settings_for(fresh_database_url)) as http:
        order_id = await confirmed_id(http, tenant)
        with psycopg.connect(fresh_database_url, autocommit=True) as conn:
            # A failure no client can cause (a missing table is a 503 schema_not_migrated instead).
            conn.execute("ALTER TABLE outbox ADD CONSTRAINT outbox_broken CHECK (false) NOT VALID")
        response = await http.post(
            f"/orders/{order_id}/close", headers={**tenant_headers(tenant), "X-Request-ID": "r-500"}
        )
    assert response.status_code == 500
    assert response.json() == {"code": "internal_error", "message": "internal error"}
    assert response.headers["x-request-id"] == "r-500"
    text = response.text.lower()
    assert "outbox" not in text and "relation" not in text


async def test_a_sent_request_id_is_echoed(client):
    for rid in ("abc-123", "0f1e2d3c4b5a", "a" * 128, "x.y:z/w+=_"):
        response = await client.get("/healthz", headers={"X-Request-ID": rid})
        assert response.headers["x-request-id"] == rid


async def test_a_request_id_is_generated_when_absent_and_on_errors(client):
    first, second = await client.get("/healthz"), await client.get("/nope")
    assert re.fullmatch(r"[0-9a-f]{32}", first.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{32}", second.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize("rid", ["", "has space", "a" * 129, "semi;colon", 'quote"', "caf\xe9"], ids=repr)
async def test_an_invalid_incoming_request_id_is_replaced(client, rid):
    response = await client.get("/healthz", headers={"X-Request-ID": rid.encode("latin-1")})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    assert response.headers.get_list("x-request-id") == [response.headers["x-request-id"]]


async def test_the_real_server_parses_curl_style_form_bodies_and_refuses_big_ones(live_server, tenant, db):
    """Through uvicorn and a socket: what `curl -d '{}'` sends, and 413 for both ways of sending too much."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(17):
            yield b" " * 4096

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    async with httpx.AsyncClient(base_url=live_server) as http:
        created = await http.post("/orders", headers=keyed(tenant, **form), content=b"{}")
        assert created.status_code == 201 and created.json()["tenantId"] == tenant, created.text
        too_big = await http.post("/orders", headers=keyed(tenant), content=b"{}" + b" " * MAX_BODY)
        assert_error(too_big, 413, "payload_too_large")
        chunked = await http.post("/orders", headers=keyed(tenant), content=chunks())
        assert_error(chunked, 413, "payload_too_large")
    assert await count_orders(db, tenant) == 1


async def test_the_real_server_does_not_name_its_software_and_ignores_forwarded_headers(live_server, tenant):
    """No `server: uvicorn` for scanners to key on; X-Forwarded-* change nothing the service answers."""
    forwarded = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-For": "203.0.113.9",
        "X-Forwarded-Host": "evil.test",
    }
    async with httpx.AsyncClient(base_url=live_server) as http:
        created = await http.post("/orders", headers=keyed(tenant, **forwarded))
    assert created.status_code == 201, created.text
    assert "server" not in created.headers
    assert created.headers["location"] == f"/orders/{created.json()['id']}"
