"""Who is calling: X-Tenant-Id or a bearer JWT's tenant_id, decoded in dev mode and verified in jwt mode."""

import random
import string
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import test_settings as settings_for
from support import app_client, assert_error, count_orders

ENDPOINTS = [
    ("POST", "/orders"),
    ("GET", "/orders"),
    ("GET", "/orders/{id}"),
    ("PATCH", "/orders/{id}"),
    ("PATCH", "/orders/{id}/confirm"),
    ("POST", "/orders/{id}/close"),
]


def token(
    claims: dict[str, Any], key: Any = "any-secret-of-32-bytes-or-more!!", algorithm: str = "HS256"
) -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def post(client: httpx.AsyncClient, headers: dict[str, Any]) -> httpx.Response:
    return await client.post("/orders", headers={**headers, "Idempotency-Key": uuid.uuid4().hex})


async def assert_created_for(response: httpx.Response, tenant: str, db) -> None:
    assert response.status_code == 201, response.text
    assert response.json()["tenantId"] == tenant
    assert (
        await db.fetchval("SELECT tenant_id FROM orders WHERE id = $1", uuid.UUID(response.json()["id"]))
        == tenant
    )


def assert_unauthorized(response: httpx.Response) -> None:
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


# --- dev mode (the shared app): the header, or an unverified token


async def test_dev_mode_takes_the_tenant_from_x_tenant_id(client, tenant, db):
    await assert_created_for(await post(client, {"X-Tenant-Id": tenant}), tenant, db)


async def test_dev_mode_takes_the_tenant_from_an_unverified_bearer_token(client, tenant, db):
    await assert_created_for(await post(client, bearer(token({"tenant_id": tenant}))), tenant, db)


async def test_dev_mode_accepts_a_header_and_token_that_agree(client, tenant, db):
    headers = {"X-Tenant-Id": tenant, **bearer(token({"tenant_id": tenant}))}
    await assert_created_for(await post(client, headers), tenant, db)


async def test_dev_mode_refuses_a_header_and_token_that_disagree_with_403(client, tenant, db):
    headers = {"X-Tenant-Id": tenant, **bearer(token({"tenant_id": f"{tenant}-x"}))}
    assert_error(await post(client, headers), 403, "forbidden")
    assert await count_orders(db, tenant) == 0 and await count_orders(db, f"{tenant}-x") == 0


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_every_endpoint_without_an_identity_returns_401(client, method, path):
    response = await client.request(method, path.format(id=uuid.uuid4()), json={"totalCents": 1})
    assert_unauthorized(response)


@pytest.mark.parametrize(
    "authorization",
    ["Bearer not-a-jwt", "Bearer a.b.c", "Bearer", "Bearer   ", "Basic Zm9vOmJhcg==", "Token abc", "bearer"],
)
async def test_a_malformed_authorization_header_returns_401(client, tenant, db, authorization):
    assert_unauthorized(await post(client, {"Authorization": authorization, "X-Tenant-Id": tenant}))
    assert await count_orders(db, tenant) == 0


@pytest.mark.parametrize(
    "claims", [{}, {"sub": "x"}, {"tenant_id": 7}, {"tenant_id": None}, {"tenant_id": ["a"]}]
)
async def test_a_token_without_a_string_tenant_id_claim_returns_401(client, claims):
    assert_unauthorized(await post(client, bearer(token(claims))))


BAD_TENANTS = ["", "a" * 65, "has space", "a/b", "semi;colon", "caf\xe9", "new\\nline", "*"]


@pytest.mark.parametrize("bad", BAD_TENANTS, ids=repr)
async def test_an_invalid_tenant_id_in_the_header_returns_400(client, db, bad):
    assert_error(await post(client, {"X-Tenant-Id": bad.encode("latin-1")}), 400, "bad_request")
    assert await count_orders(db, bad) == 0


@pytest.mark.parametrize("bad", BAD_TENANTS, ids=repr)
async def test_an_invalid_tenant_id_in_the_token_returns_400(client, db, bad):
    assert_error(await post(client, bearer(token({"tenant_id": bad}))), 400, "bad_request")
    assert await count_orders(db, bad) == 0


@pytest.mark.parametrize("good", ["a" * 64, "A.b_c:d-9", "x"])
async def test_tenant_ids_of_1_to_64_allowed_characters_are_accepted(client, db, good):
    suffix = uuid.uuid4().hex[:8]
    tenant = good[: 64 - 8] + suffix if len(good) > 8 else good + suffix
    await assert_created_for(await post(client, {"X-Tenant-Id": tenant}), tenant, db)


TENANT_CHARS = string.ascii_letters + string.digits + "._:-"


@pytest.mark.parametrize("length", [1, 64])
async def test_tenant_ids_of_exactly_1_and_64_characters_create_and_read_their_orders(client, db, length):
    tenant = "".join(random.choices(TENANT_CHARS, k=length))
    response = await post(client, {"X-Tenant-Id": tenant})
    await assert_created_for(response, tenant, db)
    order_id = response.json()["id"]
    got = await client.get(f"/orders/{order_id}", headers={"X-Tenant-Id": tenant})
    assert got.status_code == 200 and got.json()["tenantId"] == tenant
    listed = await client.get("/orders", params={"limit": 100}, headers={"X-Tenant-Id": tenant})
    assert order_id in {item["id"] for item in listed.json()["items"]}


async def test_a_tenant_id_of_65_characters_is_refused_on_writes_and_reads(client, db):
    tenant = "".join(random.choices(TENANT_CHARS, k=65))
    assert_error(await post(client, {"X-Tenant-Id": tenant}), 400, "bad_request")
    assert_error(await client.get("/orders", headers={"X-Tenant-Id": tenant}), 400, "bad_request")
    assert_error(await post(client, bearer(token({"tenant_id": tenant}))), 400, "bad_request")
    assert await count_orders(db, tenant) == 0 and await count_orders(db, tenant[:64]) == 0


# --- jwt mode: verified tokens only


class Signer(NamedTuple):
    algorithm: str
    private: Any
    verify: dict[str, Any]
    stranger: Any  # another key of the same kind, whose signatures must not verify


def _pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _signer(algorithm: str) -> Signer:
    if algorithm == "HS256":
        secret = uuid.uuid4().hex * 2
        return Signer(algorithm, secret, {"jwt_secret": secret}, uuid.uuid4().hex * 2)
    if algorithm == "RS256":
        private, stranger = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    else:
        private, stranger = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    return Signer(algorithm, private, {"jwt_public_key": _pem(private)}, stranger)


@pytest.fixture(scope="module", params=["HS256", "RS256", "ES256"])
async def verified(request, database_url) -> AsyncIterator[tuple[httpx.AsyncClient, Signer]]:
    signer = _signer(request.param)
    settings = settings_for(
        database_url, auth_mode="jwt", jwt_algorithms=(signer.algorithm,), **signer.verify
    )
    async with app_client(settings) as http:
        yield http, signer


def signed(signer: Signer, claims: dict[str, Any], key: Any = None) -> dict[str, str]:
    claims = {"exp": int(time.time()) + 300, **claims}
    return bearer(token(claims, signer.private if key is None else key, signer.algorithm))


async def test_jwt_mode_takes_the_tenant_from_a_verified_token(verified, tenant, db):
    http, signer = verified
    await assert_created_for(await post(http, signed(signer, {"tenant_id": tenant})), tenant, db)


async def test_jwt_mode_refuses_a_bare_x_tenant_id_with_401(verified, tenant, db):
    http, _ = verified
    assert_unauthorized(await post(http, {"X-Tenant-Id": tenant}))
    assert await count_orders(db, tenant) == 0


async def test_jwt_mode_accepts_a_header_that_agrees_with_the_token(verified, tenant, db):
    http, signer = verified
    headers = {"X-Tenant-Id": tenant, **signed(signer, {"tenant_id": tenant})}
    await assert_created_for(await post(http, headers), tenant, db)


async def test_jwt_mode_refuses_a_header_that_disagrees_with_the_token_with_403(verified, tenant, db):
    http, signer = verified
    headers = {"X-Tenant-Id": f"{tenant}-x", **signed(signer, {"tenant_id": tenant})}
    assert_error(await post(http, headers), 403, "forbidden")
    assert await count_orders(db, tenant) == 0 and await count_orders(db, f"{tenant}-x") == 0


async def test_jwt_mode_refuses_an_expired_token(verified, tenant, db):
    http, signer = verified
    assert_unauthorized(await post(http, signed(signer, {"tenant_id": tenant, "exp": int(time.time()) - 60})))
    assert await count_orders(db, tenant) == 0


async def test_jwt_mode_refuses_a_token_without_exp(verified, tenant):
    http, signer = verified
    assert_unauthorized(
        await post(http, bearer(token({"tenant_id": tenant}, signer.private, signer.algorithm)))
    )


async def test_jwt_mode_refuses_a_token_signed_with_another_key(verified, tenant, db):
    http, signer = verified
    assert_unauthorized(await post(http, signed(signer, {"tenant_id": tenant}, key=signer.stranger)))
    assert await count_orders(db, tenant) == 0


async def test_jwt_mode_refuses_a_token_with_a_tampered_payload(verified, tenant):
    http, signer = verified
    header, _, signature = signed(signer, {"tenant_id": tenant})["Authorization"].split(".")
    forged = jwt.utils.base64url_encode(
        b'{"tenant_id":"%s","exp":9999999999}' % f"{tenant}-x".encode()
    ).decode()
    assert_unauthorized(await post(http, {"Authorization": f"{header}.{forged}.{signature}"}))


async def test_jwt_mode_refuses_unsigned_and_foreign_algorithm_tokens(verified, tenant):
    http, signer = verified
    claims = {"tenant_id": tenant, "exp": int(time.time()) + 300}
    assert_unauthorized(await post(http, bearer(jwt.encode(claims, None, algorithm="none"))))
    other = "HS256" if signer.algorithm != "HS256" else "HS512"
    assert_unauthorized(await post(http, bearer(jwt.encode(claims, uuid.uuid4().hex * 2, algorithm=other))))


@pytest.mark.parametrize("flaw", ["foreign-signature", "expired", "unsigned"])
async def test_jwt_mode_refuses_an_invalid_token_even_with_a_matching_x_tenant_id(verified, tenant, db, flaw):
    """No header bypasses a verified token: X-Tenant-Id naming the token's own tenant does not rescue it."""
    http, signer = verified
    claims = {"tenant_id": tenant, "exp": int(time.time()) + 300}
    tokens = {
        "foreign-signature": signed(signer, claims, key=signer.stranger),
        "expired": signed(signer, {**claims, "exp": int(time.time()) - 60}),
        "unsigned": bearer(jwt.encode(claims, None, algorithm="none")),
    }
    assert_unauthorized(await post(http, {"X-Tenant-Id": tenant, **tokens[flaw]}))
    response = await http.get("/orders", headers={"X-Tenant-Id": tenant, **tokens[flaw]})
    assert_unauthorized(response)
    assert await count_orders(db, tenant) == 0


@pytest.fixture(scope="module")
async def with_issuer(database_url) -> AsyncIterator[tuple[httpx.AsyncClient, Signer]]:
    signer = _signer("HS256")
    settings = settings_for(
        database_url,
        auth_mode="jwt",
        jwt_algorithms=("HS256",),
        jwt_issuer="https://issuer.test/",
        jwt_audience="orders-svc",
        **signer.verify,
    )
    async with app_client(settings) as http:
        yield http, signer


async def test_jwt_mode_accepts_the_configured_issuer_and_audience(with_issuer, tenant, db):
    http, signer = with_issuer
    claims = {"tenant_id": tenant, "iss": "https://issuer.test/", "aud": "orders-svc"}
    await assert_created_for(await post(http, signed(signer, claims)), tenant, db)


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "https://evil.test/", "aud": "orders-svc"},
        {"aud": "orders-svc"},
        {"iss": "https://issuer.test/", "aud": "another-api"},
        {"iss": "https://issuer.test/"},
    ],
    ids=["wrong-iss", "no-iss", "wrong-aud", "no-aud"],
)
async def test_jwt_mode_refuses_a_token_for_another_issuer_or_audience(with_issuer, tenant, db, claims):
    http, signer = with_issuer
    assert_unauthorized(await post(http, signed(signer, {"tenant_id": tenant, **claims})))
    assert await count_orders(db, tenant) == 0


async def test_a_token_tenant_with_a_trailing_newline_is_refused_on_reads_too(client):
    # Reads never reach the database's CHECK constraint, so the service's own pattern must reject it.
    response = await client.get("/orders", headers=bearer(token({"tenant_id": "acme\n"})))
    assert_error(response, 400, "bad_request")


@pytest.mark.parametrize("name", ["X-Tenant-Id", "Authorization"])
async def test_an_identity_header_sent_twice_returns_400_and_creates_nothing(client, db, name):
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    value = tenant if name == "X-Tenant-Id" else bearer(token({"tenant_id": tenant}))["Authorization"]
    headers = [
        (name, value),
        (name, value + "x" if name == "X-Tenant-Id" else value),
        ("Idempotency-Key", "k"),
    ]
    response = await client.post("/orders", headers=headers, content=b"{}")
    assert_error(response, 400, "bad_request")
    assert await count_orders(db, tenant) == 0
