"""The service's Database: an asyncpg pool reached only through methods that take a turn, in order."""

import asyncio

import asyncpg
import pytest

from orders_svc.db import Database, connection, create_pool, transaction
from orders_svc.errors import ApiError

from conftest import test_settings as settings_for

# lock_not_available (55P03) naming no row or key, as a table locked by maintenance raises it: 503 (a wait
# on a row or key, 409, is tried in tests/test_database_bounds.py).
LOCK_NOT_AVAILABLE = "DO $$ BEGIN RAISE EXCEPTION 'held' USING ERRCODE = '55P03'; END $$"


async def one_connection(database_url: str, generic_plans: bool = False) -> Database:
    return await create_pool(
        settings_for(database_url, pool_min=1, pool_max=1), database_url, generic_plans=generic_plans
    )


async def test_every_way_of_taking_a_connection_waits_its_turn_in_the_order_it_asked(database_url):
    """Requests (connection, transaction) and the relay and housekeeping (acquire) share one queue."""
    database = await one_connection(database_url)
    ways = {"acquire": database.acquire, "connection": lambda: connection(database)}
    ways["transaction"] = lambda: transaction(database)
    served: list[str] = []

    async def use(name: str, turns_first: int = 0) -> None:
        for _ in range(turns_first):
            await asyncio.sleep(0)
        async with ways[name.split("-")[0]]() as conn:
            await conn.fetchval("SELECT 1")
            served.append(name)

    try:
        for turns in range(8):
            served.clear()
            holder = database.acquire()
            await holder.__aenter__()
            names = [f"{way}-{n}" for n, way in enumerate(["acquire", "connection", "transaction"] * 2)]
            waiting = [asyncio.create_task(use(name)) for name in names]
            for _ in range(10):  # no I/O involved: a few turns of the loop put all six in the queue
                await asyncio.sleep(0)
            assert served == []  # nobody got past the holder
            release = asyncio.create_task(holder.__aexit__(None, None, None))
            newcomer = asyncio.create_task(use("acquire-late", turns))
            await asyncio.gather(release, newcomer, *waiting)
            assert served == [*names, "acquire-late"], turns
    finally:
        await database.close()


async def test_acquire_leaves_driver_errors_as_they_are_and_request_scopes_translate_them(database_url):
    database = await one_connection(database_url)
    try:
        with pytest.raises(asyncpg.LockNotAvailableError):
            async with database.acquire() as conn:
                await conn.execute(LOCK_NOT_AVAILABLE)
        for scope in (connection, transaction):
            with pytest.raises(ApiError) as raised:
                async with scope(database) as conn:
                    await conn.execute(LOCK_NOT_AVAILABLE)
            assert raised.value.status == 503
        async with database.acquire() as conn:  # every turn was given back
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await database.close()


async def test_connections_decode_jsonb_plan_generically_and_keep_their_session_on_release(database_url):
    database = await one_connection(database_url, generic_plans=True)
    try:
        async with connection(database) as conn:
            assert await conn.fetchval("""SELECT '{"a": [1, "b"]}'::jsonb""") == {"a": [1, "b"]}
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
            await conn.execute("SET work_mem = '7MB'")
            backend = await conn.fetchval("SELECT pg_backend_pid()")
        async with transaction(database) as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == backend
            # No RESET ALL round trip on release: the session is handed on as it was left.
            assert await conn.fetchval("SHOW work_mem") == "7MB"
    finally:
        await database.close()


async def test_the_relays_pool_plans_each_statement_as_postgresql_chooses(database_url):
    database = await one_connection(database_url)
    try:
        async with database.acquire() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == "auto"
            assert await conn.fetchval("SHOW application_name") == "orders-svc"
    finally:
        await database.close()
