"""The database (an asyncpg pool taken in turns), the one transaction helper, and the one place driver
errors become API errors."""

import asyncio
import collections
import contextvars
import math
from collections.abc import Awaitable, Callable, Hashable
from contextvars import ContextVar
from typing import Any, TypeVar

import asyncpg
import msgspec
from asyncpg import Connection
from starlette.requests import ClientDisconnect

from . import errors
from .errors import log
from .observability import metrics, tracing
from .settings import Settings

__all__ = [
    "Batch",
    "Connection",
    "Database",
    "Pool",
    "QueuedTooLong",
    "client_gone",
    "connection",
    "contended",
    "create_pool",
    "transaction",
    "translated",
]

# Set per request by the HTTP layer: whether the request's client has gone away (serving.py), and whether the
# request is a write (not GET or HEAD) and what row or key it contends on, if anything (middleware.py). Unset
# outside requests (relay, jobs, tests).
client_gone: ContextVar[Callable[[], bool] | None] = ContextVar("client_gone", default=None)
writing: ContextVar[bool] = ContextVar("writing", default=False)
contended: ContextVar[Hashable | None] = ContextVar("contended", default=None)

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.decode


async def _init_connection(conn: Connection) -> None:
    # jsonb values travel as text; msgspec does the (de)serialisation.
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=lambda value: _json_encode(value).decode(),
        decoder=_json_decode,
        format="text",
    )
    if tracing.state.tracer is not None:
        conn.add_query_logger(tracing.sql_span)


def statement_budget_ms(settings: Settings) -> int:
    """statement_timeout (0: none) plus the wait a statement may spend queued behind a concurrent lock holder.

    PostgreSQL counts lock waits against statement_timeout. Were the two equal (as by default), the
    statement timeout would fire first and a queued request would get 503 "unavailable", not 409
    request_in_progress.
    """
    if settings.statement_timeout_ms == 0:
        return 0
    return settings.statement_timeout_ms + settings.idempotency_wait_ms


def server_settings(settings: Settings, generic_plans: bool) -> dict[str, str]:
    # lock_timeout bounds how long a request waits behind a concurrent one holding the same idempotency key
    # or order row; past it the request gets 409 request_in_progress instead of hanging.
    values = {
        "application_name": "orders-svc",
        "statement_timeout": str(statement_budget_ms(settings)),
        "lock_timeout": str(settings.idempotency_wait_ms),
        "timezone": "UTC",
    }
    if generic_plans:
        # Plan each prepared statement once per session. By default PostgreSQL compares the generic plan
        # with the plans made for the first five executions' values and, for the list statements, kept
        # re-planning on every request: about half of their cost (pgbench: 25-37k executions/s, 52-64k
        # with generic plans). Every API statement is a primary key or (tenant_id, created_at, id) index
        # range whatever the values, which tests pin with EXPLAIN.
        values["plan_cache_mode"] = "force_generic_plan"
    return values


async def _keep_session(conn: Connection) -> None:
    """Release hook: asyncpg still rolls back an open transaction; the session needs nothing else reset."""
    # The default reset sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every
    # release: a round trip per request. The service takes no advisory locks, opens no cursors, LISTENs only
    # on dedicated connections and sets session settings only at connect (server_settings) or per
    # transaction (set_config(..., true)), so there is nothing for it to undo.


class Turns:
    """A FIFO semaphore with `free` turns: the holders past them wait in arrival order, and a holder that
    leaves hands its turn to the first still waiting, so no one who comes later passes them.

    Taking a free turn is `turns.free -= 1` after checking `turns.free`: no call, no future. Only a wait
    creates one. A wait's bound is kept with it, and one timer per semaphore, set for the earliest bound,
    fails the waits past theirs when it fires and is set again for the next: no timer per wait (creating,
    scheduling and cancelling one cost a third of a wait's own work; `asyncio.timeout` ten calls more again).
    """

    __slots__ = ("_due", "_timer", "free", "waiting")

    def __init__(self, free: int) -> None:
        self.free = free
        self.waiting: collections.deque[tuple[asyncio.Future[None], float]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._due = math.inf  # when the timer fires (inf: no timer)

    async def wait(self, seconds: float | None) -> None:
        """Wait for a turn handed on (only when none is free), at most `seconds`: TimeoutError past them."""
        loop = asyncio.get_running_loop()
        turn = loop.create_future()
        due = math.inf if seconds is None else loop.time() + seconds
        self.waiting.append((turn, due))
        if due < self._due:
            self._set_timer(loop, due)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self.release()  # handed the turn as the wait ended (cancelled): pass it on
            # Otherwise the turn is over where it waits (cancelled or expired), and release() skips it.
            raise

    async def take(self, seconds: float | None = None) -> None:
        if self.free:
            self.free -= 1
        else:
            await self.wait(seconds)

    def release(self) -> None:
        waiting = self.waiting
        while waiting:
            turn = waiting.popleft()[0]
            if not turn.done():
                turn.set_result(None)
                return
        self.free += 1

    def _set_timer(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._due = due
        self._timer = loop.call_at(due, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail the waits past their bound; set the timer for the earliest bound left, if any."""
        self._timer, self._due = None, math.inf
        now, following = loop.time(), math.inf
        for turn, due in self.waiting:
            if turn.done():
                continue
            if due <= now:
                turn.set_exception(TimeoutError())
            elif due < following:
                following = due
        if following < math.inf:
            self._set_timer(loop, following)


J = TypeVar("J")
R = TypeVar("R")
# Runs several jobs in one transaction and one round trip, each job's result in order (Database.batched); with
# one job, as it would run alone.
Batch = Callable[[Connection, list[J]], Awaitable[list[R]]]


class _Waiting:
    """A job waiting for a runner (Database.batched)."""

    __slots__ = ("batch", "due", "future", "job", "trace")

    def __init__(self, batch: Batch[Any, Any], job: Any, future: asyncio.Future[Any], due: float):
        self.batch, self.job, self.future, self.due = batch, job, future, due
        self.trace = tracing.current() if tracing.state.tracer is not None else None  # its request's span


class Database:
    """The service's connections: an asyncpg pool, handed out first come, first served, within bounds.

    asyncpg queues requests for a connection on an asyncio.Queue, where a request that asks while a released
    connection is on its way to the first waiter takes it instead, and the waiter queues again at the back.
    Under load, with more requests in flight than connections, the oldest waiters starved: a retry storm on
    one key had a p99 of 150-200 ms against a p50 of 6 ms. Every connection here is handed out after a turn
    taken from a FIFO semaphore as large as the pool (`Turns`: no one passes its waiters), so
    asyncpg's queue always has a connection for whoever holds a turn. The pool is reachable only through
    this class's methods, so the API, the relay and housekeeping all take turns.

    Writes also take one of `pool_writers` turns first: past them, a write waits in arrival order while reads
    use the rest of the pool. Writes contend (rows, stock, keys); with more of them in PostgreSQL at once than
    its cores run, their waits just move into its lock queues and scheduler, with the longest tails (3 items
    at 32 connections: p99 117-173 ms with 32 writers, 43-65 ms with 4-10). Reads contend on nothing and are
    served fastest with every connection the pool has (11-13 % more reads/s at 32 connections than with 10).
    Creates of orders with items are placed by `batched`, not in a turn each: at most `pool_stock_writers`
    connections place them at once (the runners, each taking a writer's turn), and those that wait meanwhile
    are placed together, up to `stock_batch` (of any tenants) per round trip and commit. Each holds its
    products' rows until its transaction commits, so fewer at once wait here rather than in PostgreSQL's
    queues, and every other write keeps all of the writers' turns.

    Bounds, for requests (`connection`, `transaction`): the turns are waited for at most `pool_timeout_ms`
    together (then 503 pool_exhausted); a request whose client has gone is dropped before it takes one.
    Writes that contend on the same row or key queue here, one at a time per process, rather than each
    holding a connection while PostgreSQL makes it wait on the row lock: a hot row ties up one connection,
    not the pool (the queue is waited on for at most `idempotency_wait_ms`, then 409 request_in_progress, as
    a wait in the database).
    """

    __slots__ = (
        "_batch_size",
        "_batch_timer",
        "_batched",
        "_close_timeout",
        "_key_wait",
        "_pending",
        "_pool",
        "_pool_wait",
        "_queues",
        "_runners",
        "_runners_max",
        "_running",
        "_turns",
        "_writer_turns",
    )

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._turns = Turns(settings.pool_max)
        self._writer_turns = Turns(min(settings.pool_writers, settings.pool_max))
        self._runners_max = min(settings.pool_stock_writers, settings.pool_writers, settings.pool_max)
        self._batch_size = settings.stock_batch
        self._batched: collections.deque[_Waiting] = collections.deque()
        self._batch_timer: asyncio.TimerHandle | None = None  # for the oldest job's bound
        self._runners = 0  # batches' runners at work
        self._running: set[asyncio.Task[None]] = set()  # their tasks (the loop keeps only weak references)
        self._pool_wait = settings.pool_timeout_ms / 1000
        self._key_wait = settings.idempotency_wait_ms / 1000
        self._close_timeout = settings.pool_close_timeout_ms / 1000
        self._queues: dict[Hashable, Turns] = {}
        self._pending = 0  # requests waiting for a turn

    def usage(self) -> metrics.PoolUsage:
        """Connections in use and idle, the most there may be, and the requests waiting for a turn."""
        pool = self._pool
        idle = pool.get_idle_size()
        return metrics.PoolUsage(pool.get_size() - idle, idle, pool.get_max_size(), self._pending)

    def queued(self) -> "_Queued":
        """`async with`: this request's turn among the writes on what it contends on (see `contended`), for
        the whole block; the scopes inside it do not queue again."""
        return _Queued(self)

    def acquire(self) -> "_Scope":
        """`async with`: a pooled connection in autocommit, driver errors left as they are (relay, jobs)."""
        return _Scope(self, in_transaction=False, translate=False)

    async def close(self) -> None:
        """Close the connections, each cleanly if the database answers within `pool_close_timeout_ms`;
        past it (a database that stopped answering) they are dropped."""
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._batch_timer = None
        try:
            async with asyncio.timeout(self._close_timeout):
                await self._pool.close()
        except TimeoutError:
            log.warning("database pool did not close in time: connections dropped")
            self._pool.terminate()

    async def _take_turn(self, write: bool) -> None:
        """A turn for a connection, after a writer's turn for a write: both within `pool_timeout_ms`."""
        turns, writers = self._turns, self._writer_turns
        if turns.free and (writers.free or not write):  # no waiting, no timer
            turns.free -= 1
            if write:
                writers.free -= 1
            metrics.observe_pool_wait(0.0)
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._pending += 1
        held: list[Turns] = []
        try:
            for needed, taken in ((write, writers), (True, turns)):
                if needed:
                    await taken.take(max(0.0, started + self._pool_wait - loop.time()))
                    held.append(taken)
        except BaseException as exc:
            for taken in held:
                taken.release()
            if isinstance(exc, TimeoutError):
                raise errors.POOL_EXHAUSTED.error() from None
            raise
        finally:
            self._pending -= 1
            metrics.observe_pool_wait(loop.time() - started)

    def _leave_turn(self, write: bool) -> None:
        self._turns.release()
        if write:
            self._writer_turns.release()

    async def batched(self, batch: "Batch[J, R]", job: J) -> R:
        """`batch` run for `job`, with the other jobs of the same batch that wait at the same time: in one
        transaction and one round trip (see Batch), by one of at most `pool_stock_writers` runners at once.

        A runner takes the oldest waiting job and up to `stock_batch` - 1 more of its batch, in arrival order,
        and runs them on a connection it takes as a write does (a writer's turn, then a turn); it goes on
        while jobs wait, and ends when none do. Under load, each round trip and commit serves several
        requests; with one request at a time, each runs alone, at once. A job waits at most `pool_timeout_ms`
        to be taken (then 503 pool_exhausted), and the request waiting for it holds no connection. Errors are
        the API's (`translated`), a batch's for each of its jobs. A job whose request has gone is dropped if
        it has not been taken yet.
        """
        _check_client()
        loop = asyncio.get_running_loop()
        waiting = _Waiting(batch, job, loop.create_future(), loop.time() + self._pool_wait)
        self._batched.append(waiting)
        self._pending += 1
        if self._batch_timer is None:
            self._batch_timer = loop.call_at(waiting.due, self._expire_batched)
        if self._runners < self._runners_max:
            self._runners += 1
            outside = contextvars.Context()  # no request's: the runner serves them all
            runner = loop.create_task(self._run_batches(), context=outside)
            self._running.add(runner)
            runner.add_done_callback(self._running.discard)
        try:
            result: R = await waiting.future
        except Exception as exc:
            _raise_translated(exc)
            raise
        return result

    async def _run_batches(self) -> None:
        try:
            while self._batched:
                jobs = self._next_batch()
                if not jobs:
                    continue
                if jobs[0].trace is None or tracing.state.tracer is None:
                    await self._run_batch(jobs)
                    continue
                # Traced: its statements' spans are in the first request's trace, linked to the others.
                with tracing.batch(getattr(jobs[0].batch, "__name__", "batch"), [j.trace for j in jobs]):
                    await self._run_batch(jobs)
        finally:
            self._runners -= 1

    def _expire_batched(self) -> None:
        """Answer 503 to the jobs waited for past `pool_timeout_ms` (the oldest first: all wait as long), and
        set the timer for the next one's bound."""
        waiting, now = self._batched, asyncio.get_running_loop().time()
        self._batch_timer = None
        while waiting and (waiting[0].future.done() or waiting[0].due <= now):
            first = waiting.popleft()
            self._pending -= 1
            if not first.future.done():
                first.future.set_exception(errors.POOL_EXHAUSTED.error())
        if waiting:
            self._batch_timer = asyncio.get_running_loop().call_at(waiting[0].due, self._expire_batched)

    def _next_batch(self) -> "list[_Waiting]":
        """The oldest job still waited for, and the next ones of its batch (jobs waited for no more are
        dropped)."""
        waiting = self._batched
        while waiting:
            first = waiting.popleft()
            self._pending -= 1
            if not first.future.done():
                break
        else:
            return []
        jobs = [first]
        if waiting and self._batch_size > 1:
            rest: collections.deque[_Waiting] = collections.deque()
            for other in waiting:
                if other.future.done():
                    self._pending -= 1
                elif len(jobs) < self._batch_size and other.batch is first.batch:
                    jobs.append(other)
                    self._pending -= 1
                else:
                    rest.append(other)
            self._batched = rest
        return jobs

    async def _run_batch(self, jobs: "list[_Waiting]") -> None:
        try:
            await self._take_turn(write=True)
            try:
                conn: Connection = await self._pool.acquire()
            except BaseException:
                self._leave_turn(write=True)
                raise
        except BaseException as exc:
            _fail(jobs, exc)
            if not isinstance(exc, Exception):
                raise
            return
        broken = False
        try:
            try:
                _answer(jobs, await jobs[0].batch(conn, [waiting.job for waiting in jobs]))
            except Exception as exc:
                if _breaks_connection(exc) or len(jobs) == 1 or not _one_jobs_failure(exc):
                    raise
                # A failure one of the jobs may have caused (a constraint, a deadlock broken off): the whole
                # transaction is undone, and each job runs again alone for an answer of its own.
                for waiting in jobs:
                    try:
                        _answer([waiting], await waiting.batch(conn, [waiting.job]))
                    except Exception as alone:
                        if _breaks_connection(alone):
                            raise
                        _fail([waiting], alone)
        except BaseException as exc:
            broken = _breaks_connection(exc)
            _fail(jobs, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            try:
                if broken:
                    conn.terminate()  # left mid-protocol (see _Scope._release)
                await self._pool.release(conn)
            finally:
                self._leave_turn(write=True)

    async def _enter_queue(self, key: Hashable) -> Turns:
        """The turn of this request among the writes on `key`: at once when there are none, else after
        those before it (waited for at most `idempotency_wait_ms`)."""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = Turns(0)  # taken by this request
            return queue
        try:
            await queue.take(self._key_wait)  # free when a write handed the turn on to one that had gone
        except BaseException as exc:
            if queue.free and self._queues.get(key) is queue:  # handed the turn as it left, and passed it on
                del self._queues[key]  # to nobody: no one holds the key or waits for it
            if isinstance(exc, TimeoutError):
                raise errors.REQUEST_IN_PROGRESS.error() from None
            raise
        return queue

    def _leave_queue(self, key: Hashable, queue: Turns) -> None:
        queue.release()
        if queue.free:  # nobody left waiting on the key
            del self._queues[key]


Pool = Database


def _answer(jobs: list[_Waiting], results: list[Any]) -> None:
    for waiting, result in zip(jobs, results, strict=True):
        if not waiting.future.done():  # else its request has gone
            waiting.future.set_result(result)


def _fail(jobs: list[_Waiting], exc: BaseException) -> None:
    failure = exc if isinstance(exc, Exception) else errors.UNAVAILABLE.error()  # the runner was cancelled
    for waiting in jobs:
        if not waiting.future.done():
            waiting.future.set_exception(failure)


def _one_jobs_failure(exc: Exception) -> bool:
    """Whether a batch's failure may be down to one of its jobs (each then runs alone): an error the server
    reported, other than a lock wait or statement past its time, or a database unavailable or not migrated
    (which all of them would meet)."""
    return isinstance(exc, asyncpg.PostgresError) and not isinstance(
        exc, (asyncpg.LockNotAvailableError, *_UNAVAILABLE, *_NOT_MIGRATED)
    )


async def create_pool(settings: Settings, dsn: str, *, generic_plans: bool = False) -> Database:
    """The pool; `generic_plans` for the API's statements (see server_settings), not the relay's scans."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        init=_init_connection,
        reset=_keep_session,
        server_settings=server_settings(settings, generic_plans),
        timeout=settings.connect_timeout_ms / 1000,  # opening a connection (asyncpg's default: 60 s)
        command_timeout=command_timeout(settings),
    )
    return Database(pool, settings)


def command_timeout(settings: Settings) -> float | None:
    """How long the driver waits for a statement's answer: a second past the server's own statement budget,
    so a database that answers cancels the statement itself first and one that has stopped answering is
    given up on soon after (its connection is then dropped, not rolled back: see _Scope)."""
    budget = statement_budget_ms(settings)
    return budget / 1000 + 1 if budget else None


class _Queued:
    __slots__ = ("_database", "_key", "_queue", "_token")

    def __init__(self, database: Database) -> None:
        self._database = database
        self._key: Hashable | None = None
        self._queue: Turns | None = None
        self._token: contextvars.Token[Hashable | None] | None = None

    async def __aenter__(self) -> None:
        key = contended.get()
        if key is not None:
            _check_client()
            self._queue, self._key = await self._database._enter_queue(key), key
            self._token = contended.set(None)

    async def __aexit__(self, *exc_info: object) -> None:
        if self._queue is not None and self._token is not None:
            contended.reset(self._token)
            self._database._leave_queue(self._key, self._queue)


class _Scope:
    """`async with`: a pooled connection (optionally inside a transaction); driver errors become ApiErrors.

    A plain class rather than stacked generator-based context managers: it is entered on every request.
    """

    __slots__ = (
        "_conn",
        "_database",
        "_in_transaction",
        "_queue",
        "_queued",
        "_transaction",
        "_translate",
        "_write",
    )

    def __init__(self, database: Database, in_transaction: bool, translate: bool = True) -> None:
        self._database = database
        self._in_transaction = in_transaction
        self._translate = translate
        self._conn: Connection | None = None
        self._transaction: Any = None
        self._queue: Turns | None = None
        self._queued: Hashable | None = None
        self._write = False

    async def __aenter__(self) -> Connection:
        database = self._database
        if not self._translate:  # the relay and jobs: no request, no bounds but the driver's
            await database._turns.take()
        else:
            _check_client()
            key = contended.get()
            if key is not None:
                self._queue, self._queued = await database._enter_queue(key), key
            self._write = write = writing.get()
            try:
                await database._take_turn(write)
            except BaseException:
                self._leave_queue()
                raise
            if (gone := client_gone.get()) is not None and gone():
                self._leave_turn()
                raise ClientDisconnect()
        try:
            conn: Connection = await database._pool.acquire()
        except BaseException as exc:
            self._leave_turn()
            self._raise_mapped(exc)
            raise
        self._conn = conn
        if (trace := tracing.outbox_trace.get()) is not None:  # a traced write: its events carry its trace
            try:
                await tracing.mark_events(conn, trace)
            except BaseException as exc:
                await self._release(_breaks_connection(exc))
                self._raise_mapped(exc)
                raise
        if self._in_transaction:
            self._transaction = conn.transaction()
            try:
                await self._transaction.start()
            except BaseException as exc:
                await self._release(_breaks_connection(exc))
                self._raise_mapped(exc)
                raise
        return conn

    def _leave_queue(self) -> None:
        if self._queue is not None:
            self._database._leave_queue(self._queued, self._queue)
            self._queue = self._queued = None

    def _leave_turn(self) -> None:
        self._database._leave_turn(self._write)
        self._leave_queue()

    async def _release(self, broken: bool = False) -> None:
        conn = self._conn
        try:
            if broken and conn is not None:
                # Timed out or cut off mid-statement: a rollback would wait on a server that may not answer.
                conn.terminate()
            await self._database._pool.release(conn)
        finally:
            self._conn = None
            self._leave_turn()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        broken = exc is not None and _breaks_connection(exc)
        try:
            try:
                if self._transaction is not None and not broken:
                    await (self._transaction.rollback() if exc is not None else self._transaction.commit())
            except BaseException as failure:
                broken = _breaks_connection(failure)
                raise
            finally:
                await self._release(broken)
        except Exception as failure:
            self._raise_mapped(failure)
            raise
        if exc is not None:
            self._raise_mapped(exc)  # otherwise the original exception carries on

    def _raise_mapped(self, exc: BaseException) -> None:
        if self._translate:
            _raise_translated(exc)


def _check_client() -> None:
    """A request whose client has gone is not worth a connection: it ends here (logged as 499)."""
    gone = client_gone.get()
    if gone is not None and gone():
        raise ClientDisconnect()


def _breaks_connection(exc: BaseException) -> bool:
    """Whether the connection is left mid-protocol (a statement given up on, the link cut, the task
    cancelled), rather than merely having an error the server reported."""
    return isinstance(exc, (*_CUT_OFF, asyncio.CancelledError))


def _raise_translated(exc: BaseException) -> None:
    mapped = translated(exc)
    if mapped is not exc:
        raise mapped from None


def transaction(database: Database) -> _Scope:
    """A connection inside one transaction, with driver errors translated."""
    return _Scope(database, in_transaction=True)


def connection(database: Database) -> _Scope:
    """A pooled connection in autocommit, for single statements, with driver errors translated."""
    return _Scope(database, in_transaction=False)


class QueuedTooLong(asyncpg.LockNotAvailableError):  # type: ignore[misc]
    """A statement that takes or gives back stock waited past lock_timeout for its products' place in their
    queue (an advisory lock, which names no row) or for their rows (queries.orders.create_orders_with_items,
    queries.stock.give_stock_back): a write in progress on them, answered as a wait on a row is. Still a
    LockNotAvailableError for whoever handles those (the relay's housekeeping retries)."""


def translated(exc: BaseException) -> BaseException:
    """The API error for a driver error a client can cause (or wait out), by constraint name or SQLSTATE;
    anything else comes back unchanged (and ends as a logged 500)."""
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        problem = errors.BY_CONSTRAINT.get(getattr(exc, "constraint_name", None) or "")
        if problem is not None:
            return problem.error()
    if isinstance(exc, asyncpg.NumericValueOutOfRangeError):  # a sum past the integer columns' range
        return errors.OUT_OF_RANGE.error()
    if isinstance(exc, QueuedTooLong):
        return errors.REQUEST_IN_PROGRESS.error()
    if isinstance(exc, asyncpg.LockNotAvailableError):
        # A wait on a row or a key's index entry names its tuple in the error's context ("while updating
        # tuple (0,1) in relation ..."): a concurrent request holds the same row or key. Anything else (a
        # table locked by maintenance, on a read as on a write) is the service being unavailable for now.
        if "tuple" in (getattr(exc, "context", None) or ""):
            return errors.REQUEST_IN_PROGRESS.error()
        log.warning("lock not available: %s", getattr(exc, "context", None) or exc)
        return errors.LOCK_UNAVAILABLE.error()
    if isinstance(exc, (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)):
        return errors.REQUEST_IN_PROGRESS.error()
    if isinstance(exc, _NOT_MIGRATED):
        log.warning("database schema not migrated: %s", exc)
        return errors.SCHEMA_NOT_MIGRATED.error()
    if isinstance(exc, _UNAVAILABLE):
        log.warning("database unavailable: %s", type(exc).__name__)
        return errors.UNAVAILABLE.error()
    return exc


# The connection is left mid-protocol: it is dropped, never reused.
_CUT_OFF = (
    OSError,
    TimeoutError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)
# What the service's statements meet on a database whose schema is older than the build (or absent).
_NOT_MIGRATED = (
    asyncpg.UndefinedTableError,
    asyncpg.UndefinedColumnError,
    asyncpg.UndefinedFunctionError,
    asyncpg.UndefinedObjectError,
)
_UNAVAILABLE = (
    *_CUT_OFF,
    asyncpg.CannotConnectNowError,
    asyncpg.QueryCanceledError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    # Refused at connect: the database was dropped (3D000) or is not accepting connections (55000;
    # its subclass 55P03 lock_not_available is a 409 above).
    asyncpg.InvalidCatalogNameError,
    asyncpg.ObjectNotInPrerequisiteStateError,
)
