"""Roles: catalogue writes need `admin` (dev mode: X-Roles or the token's roles; jwt mode: the verified roles
claim only); reads are open to every caller of the tenant."""

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from product_helpers import count_products, product_body, product_id, product_row

from orders_svc.openapi import build_spec

from conftest import test_settings as settings_for
from support import app_client, assert_error, count_keys

WRITES = [
    ("POST", "/products", {"Idempotency-Key": "k"}, "create"),
    ("PATCH", "/products/{id}", {"If-Match": "*"}, {"name": "renamed"}),
    ("POST", "/products/{id}/stock", {"Idempotency-Key": "k"}, {"delta": 5}),
]


def token(claims: dict[str, Any], key: str = "any-secret-of-32-bytes-or-more!!") -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def write(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    extra: dict[str, str],
    body: Any,
    pid: str,
    **headers: str,
) -> httpx.Response:
    payload = product_body() if body == "create" else body
    return await http.request(method, path.format(id=pid), headers={**extra, **headers}, json=payload)


async def assert_forbidden(response: httpx.Response) -> None:
    body = assert_error(response, 403, "forbidden", reason="role_required")
    assert body["details"] == {"reason": "role_required", "role": "admin"}
    assert body["message"] == "this operation needs the admin role"


# ------------------------------------------------------------------------------------------- dev mode
@pytest.mark.parametrize(("method", "path", "extra", "body"), WRITES)
@pytest.mark.parametrize(
    "roles",
    [None, "", "support", "Admin", "administrator", "admins", "not-admin,viewer", "adm in"],
)
async def test_a_catalogue_write_without_the_admin_role_returns_403_and_changes_nothing(
    client, tenant, db, method, path, extra, body, roles
):
    pid = await product_id(client, tenant, stock=1)
    before = await product_row(db, pid)
    headers = {"X-Tenant-Id": tenant} | ({} if roles is None else {"X-Roles": roles})
    await assert_forbidden(await write(client, method, path, extra, body, pid, **headers))
    assert await product_row(db, pid) == before
    assert await count_products(db, tenant) == 1 and await count_keys(db, tenant) == 1


@pytest.mark.parametrize(("method", "path", "extra", "body"), WRITES)
@pytest.mark.parametrize("roles", ["admin", "support,admin", " viewer ,\tadmin ", "admin,admin"])
async def test_dev_mode_takes_the_admin_role_from_x_roles(client, tenant, method, path, extra, body, roles):
    pid = await product_id(client, tenant)
    response = await write(
        client, method, path, extra, body, pid, **{"X-Tenant-Id": tenant, "X-Roles": roles}
    )
    assert response.status_code in (200, 201), response.text


async def test_x_roles_sent_on_several_lines_is_one_list(client, tenant, db):
    headers = [("X-Tenant-Id", tenant), ("X-Roles", "viewer"), ("X-Roles", "admin"), ("Idempotency-Key", "k")]
    response = await client.post("/products", headers=headers, json=product_body())
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(("method", "path", "extra", "body"), WRITES)
async def test_dev_mode_takes_the_admin_role_from_an_unverified_tokens_roles_claim(
    client, tenant, method, path, extra, body
):
    pid = await product_id(client, tenant)
    headers = bearer(token({"tenant_id": tenant, "roles": ["viewer", "admin"]}))
    response = await write(client, method, path, extra, body, pid, **headers)
    assert response.status_code in (200, 201), response.text


@pytest.mark.parametrize("roles", ["admin", {"admin": True}, [["admin"]], [1], None, []], ids=repr)
async def test_a_roles_claim_that_is_not_an_array_holding_admin_grants_nothing(client, tenant, db, roles):
    headers = {**bearer(token({"tenant_id": tenant, "roles": roles})), "Idempotency-Key": "k"}
    await assert_forbidden(await client.post("/products", headers=headers, json=product_body()))
    assert await count_products(db, tenant) == 0


async def test_the_role_is_checked_after_the_identity_and_before_the_product_is_looked_up(client, tenant):
    missing = uuid.uuid4()
    anonymous = await client.patch(f"/products/{missing}", headers={"If-Match": "*"}, json={"name": "x"})
    assert_error(anonymous, 401, "unauthorized")
    no_role = await client.patch(
        f"/products/{missing}", headers={"X-Tenant-Id": tenant, "If-Match": "*"}, json={"name": "x"}
    )
    await assert_forbidden(no_role)
    bad_body = await client.post(f"/products/{missing}/stock", headers={"X-Tenant-Id": tenant}, content=b"{")
    await assert_forbidden(bad_body)


async def test_reads_need_no_role(client, tenant):
    pid = await product_id(client, tenant)
    got = await client.get(f"/products/{pid}", headers={"X-Tenant-Id": tenant})
    listed = await client.get("/products", headers={"X-Tenant-Id": tenant})
    assert got.status_code == 200 and [item["id"] for item in listed.json()["items"]] == [pid]


async def test_order_endpoints_need_no_role(client, tenant):
    response = await client.post("/orders", headers={"X-Tenant-Id": tenant, "Idempotency-Key": "k"})
    assert response.status_code == 201, response.text


# ------------------------------------------------------------------------------------------- jwt mode
SECRET = uuid.uuid4().hex * 2


@pytest.fixture(scope="module")
async def verified(database_url) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(database_url, auth_mode="jwt", jwt_algorithms=("HS256",), jwt_secret=SECRET)
    async with app_client(settings) as http:
        yield http


def signed(claims: dict[str, Any], key: str = SECRET) -> dict[str, str]:
    return bearer(token({"exp": int(time.time()) + 300, **claims}, key))


@pytest.mark.parametrize(("method", "path", "extra", "body"), WRITES)
async def test_jwt_mode_takes_the_admin_role_from_the_verified_roles_claim(
    client, verified, tenant, method, path, extra, body
):
    pid = await product_id(client, tenant)
    headers = signed({"tenant_id": tenant, "roles": ["admin"]})
    response = await write(verified, method, path, extra, body, pid, **headers)
    assert response.status_code in (200, 201), response.text


@pytest.mark.parametrize(("method", "path", "extra", "body"), WRITES)
@pytest.mark.parametrize("claims", [{}, {"roles": ["viewer"]}, {"roles": "admin"}], ids=repr)
async def test_jwt_mode_ignores_x_roles(client, verified, tenant, db, method, path, extra, body, claims):
    pid = await product_id(client, tenant, stock=1)
    before = await product_row(db, pid)
    headers = {**signed({"tenant_id": tenant, **claims}), "X-Roles": "admin"}
    await assert_forbidden(await write(verified, method, path, extra, body, pid, **headers))
    assert await product_row(db, pid) == before and await count_products(db, tenant) == 1


async def test_jwt_mode_refuses_an_admin_claim_signed_with_another_key(verified, tenant, db):
    headers = {
        **signed({"tenant_id": tenant, "roles": ["admin"]}, key=uuid.uuid4().hex * 2),
        "X-Roles": "admin",
    }
    response = await verified.post(
        "/products", headers={**headers, "Idempotency-Key": "k"}, json=product_body()
    )
    assert_error(response, 401, "unauthorized")
    assert await count_products(db, tenant) == 0


async def test_jwt_mode_refuses_x_roles_without_a_token(verified, tenant, db):
    headers = {"X-Tenant-Id": tenant, "X-Roles": "admin", "Idempotency-Key": "k"}
    assert_error(await verified.post("/products", headers=headers, json=product_body()), 401, "unauthorized")
    assert await count_products(db, tenant) == 0


async def test_jwt_mode_reads_need_no_role(client, verified, tenant):
    pid = await product_id(client, tenant)
    response = await verified.get(f"/products/{pid}", headers=signed({"tenant_id": tenant}))
    assert response.status_code == 200 and response.json()["id"] == pid


# ------------------------------------------------------------------------------------------- document
def test_the_document_lists_x_roles_and_the_403_on_exactly_the_operations_that_need_a_role():
    spec = build_spec()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            names = [p["name"] for p in operation.get("parameters", [])]
            needs = (method, path) in {
                (m.lower(), p.replace("{id}", "{product_id}")) for m, p, _, _ in WRITES
            }
            assert ("X-Roles" in names) is needs, (method, path)
            if needs:
                assert "role_required" in operation["responses"]["403"]["description"]
                assert operation["description"].startswith("Needs the role(s) admin.")
