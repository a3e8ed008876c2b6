"""Operations: liveness, readiness (following the database down and back up), OpenAPI (pages: test_docs)."""

import asyncio
import re
import time

import httpx
import psycopg
import pytest
from psycopg import sql
from starlette.routing import Route
from yoyo import read_migrations

from orders_svc import migrate
from orders_svc.migrate import yoyo_backend
from orders_svc.resources import migration_ids, migrations_dir

from conftest import create_database, drop_database, free_port
from conftest import test_settings as settings_for
from helpers import create, tenant_headers
from support import app_client, assert_error


async def poll_until(http: httpx.AsyncClient, path: str, status: int, timeout: float = 15) -> httpx.Response:
    """GET path until it answers `status` or the deadline passes; the last response either way."""
    deadline = time.monotonic() + timeout
    while True:
        response = await http.get(path)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.05)


def dbname(dsn: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]


def admin(admin_dsn: str, statement: sql.Composable, *params: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(statement, params or None)


def assert_unavailable(response: httpx.Response) -> None:
    assert_error(response, 503, "service_unavailable")
    assert response.headers["retry-after"].isdigit()


async def test_healthz_answers_200_ok(client):
    response = await client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response.headers["content-type"] == "application/json"


async def test_readyz_answers_200_when_the_database_answers(client):
    response = await client.get("/readyz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_openapi_is_version_3_1_and_documents_every_route_and_method_served(client, app):
    response = await client.get("/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    spec = response.json()
    assert re.fullmatch(r"3\.1\.\d+", spec["openapi"])
    served = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert documented == served
    for item in spec["paths"].values():
        for operation in item.values():
            assert operation["responses"] and operation["operationId"]


async def test_openapi_schemas_are_the_wire_types(client):
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    order = schemas["Order"]
    assert set(order["properties"]) == {
        "id",
        "tenantId",
        "status",
        "version",
        "totalCents",
        "createdAt",
        "updatedAt",
        "items",
        "reservedUntil",
    }
    # Only orders created with items carry the last two keys (tests/test_order_items.py).
    assert set(schemas["Order"]["required"]) == set(schemas["Order"]["properties"]) - {
        "items",
        "reservedUntil",
    }
    # totalCents is required for an order without items (422 otherwise), optional for one with items.
    assert not schemas["ConfirmOrder"].get("required")
    assert schemas["ConfirmOrder"]["properties"]["totalCents"]["maximum"] == 2**31 - 1
    assert set(schemas["Error"]["required"]) == {"code", "message"}
    assert set(schemas["OrderPage"]["properties"]) == {"items", "nextCursor"}


async def test_readyz_answers_503_when_the_database_cannot_be_reached(tenant):
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/orders"
    async with app_client(settings_for(unreachable, pool_min=0)) as http:
        assert_unavailable(await http.get("/readyz"))
        assert_unavailable(await create(http, tenant))
        assert_unavailable(await http.get("/orders", headers=tenant_headers(tenant)))
        assert (await http.get("/healthz")).status_code == 200


async def test_readyz_follows_a_database_that_stops_accepting_connections_and_recovers(
    fresh_database_url, admin_dsn, tenant
):
    name = sql.Identifier(dbname(fresh_database_url))
    async with app_client(settings_for(fresh_database_url, pool_min=2)) as http:
        assert (await http.get("/readyz")).status_code == 200
        admin(admin_dsn, sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(name))
        terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
        admin(admin_dsn, sql.SQL(terminate), dbname(fresh_database_url))
        assert_unavailable(await poll_until(http, "/readyz", 503))
        assert_unavailable(await poll_until(http, "/readyz", 503))
        assert_unavailable(await create(http, tenant))
        admin(admin_dsn, sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(name))
        assert (await poll_until(http, "/readyz", 200)).status_code == 200
        assert (await create(http, tenant)).status_code == 201


async def test_readyz_follows_a_dropped_database_and_recovers_when_it_is_back(
    fresh_database_url, admin_dsn, template_db, tenant
):
    name = dbname(fresh_database_url)
    async with app_client(settings_for(fresh_database_url, pool_min=2)) as http:
        assert (await create(http, tenant)).status_code == 201
        drop_database(admin_dsn, name)
        assert_unavailable(await poll_until(http, "/readyz", 503))
        assert_unavailable(await http.get("/orders", headers=tenant_headers(tenant)))
        create_database(admin_dsn, name, template=template_db)
        assert (await poll_until(http, "/readyz", 200)).status_code == 200
        response = await http.get("/orders", headers=tenant_headers(tenant))
        assert response.status_code == 200 and response.json() == {"items": [], "nextCursor": None}


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json", "/docs", "/redoc"])
async def test_operational_endpoints_need_no_tenant(client, path):
    assert (await client.get(path)).status_code == 200


MIGRATIONS = [
    "0001_orders",
    "0002_outbox",
    "0003_idempotency_keys",
    "0004_outbox_relay",
    "0005_outbox_notify_on_idle",
    "0006_order_cancel",
    "0007_products",
    "0008_outbox_wakeup",
    "0009_payments",
    "0010_outbox_traceparent",
    "0011_orders_hot_status",
    "0012_payments_hot_status",
    "0013_outbox_notify_plan",
]


def assert_not_migrated(response: httpx.Response, missing: list[str]) -> None:
    assert_unavailable(response)
    body = response.json()
    assert body["details"] == {"reason": "schema_not_migrated", "missingMigrations": missing}
    assert "orders-svc migrate" in body["message"]


async def test_readyz_answers_503_until_the_database_is_migrated(empty_database_url):
    """Reachable is not ready: an instance whose schema is missing would answer every order request with a
    500, so it must not be sent traffic. Migrating it makes it ready without a restart."""
    async with app_client(settings_for(empty_database_url)) as http:
        assert_not_migrated(await http.get("/readyz"), MIGRATIONS)
        assert (await http.get("/healthz")).status_code == 200
        await asyncio.to_thread(migrate.apply, empty_database_url)
        response = await http.get("/readyz")
        assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_readyz_names_the_migrations_a_database_behind_this_build_lacks(fresh_database_url):
    with yoyo_backend(fresh_database_url) as backend:
        newest = backend.to_rollback(read_migrations(str(migrations_dir())))[:1]
        backend.rollback_migrations(newest)
    async with app_client(settings_for(fresh_database_url)) as http:
        assert_not_migrated(await http.get("/readyz"), MIGRATIONS[-1:])


def test_the_readiness_check_knows_every_shipped_migration():
    assert migration_ids() == MIGRATIONS
