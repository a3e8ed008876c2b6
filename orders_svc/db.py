"""The database (an asyncpg pool taken in turns), the one transaction helper, and the one place driver
errors become API errors."""

import asyncio
from typing import Any

import asyncpg
import msgspec
from asyncpg import Connection

from . import errors
from .errors import log
from .settings import Settings

__all__ = ["Connection", "Database", "Pool", "connection", "create_pool", "transaction", "translated"]

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


class Database:
    """The service's connections: an asyncpg pool, handed out first come, first served.

    asyncpg queues requests for a connection on an asyncio.Queue, where a request that asks while a released
    connection is on its way to the first waiter takes it instead, and the waiter queues again at the back.
    Under load, with more requests in flight than connections, the oldest waiters starved: a retry storm on
    one key had a p99 of 150-200 ms against a p50 of 6 ms. Every connection here is handed out after a turn
    taken from a FIFO semaphore as large as the pool (asyncio.Semaphore lets no one past its waiters), so
    asyncpg's queue always has a connection for whoever holds a turn. The pool is reachable only through
    this class's methods, so the API, the relay and housekeeping all take turns.
    """

    __slots__ = ("_pool", "_turns")

    def __init__(self, pool: asyncpg.Pool, size: int) -> None:
        self._pool = pool
        self._turns = asyncio.Semaphore(size)

    def acquire(self) -> "_Scope":
        """`async with`: a pooled connection in autocommit, driver errors left as they are (relay, jobs)."""
        return _Scope(self, in_transaction=False, translate=False)

    async def close(self) -> None:
        await self._pool.close()


Pool = Database


async def create_pool(settings: Settings, dsn: str, *, generic_plans: bool = False) -> Database:
    """The pool; `generic_plans` for the API's statements (see server_settings), not the relay's scans."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        init=_init_connection,
        reset=_keep_session,
        server_settings=server_settings(settings, generic_plans),
        command_timeout=max(statement_budget_ms(settings) / 1000 + 5, 10),
    )
    return Database(pool, settings.pool_max)


class _Scope:
    """`async with`: a pooled connection (optionally inside a transaction); driver errors become ApiErrors.

    A plain class rather than stacked generator-based context managers: it is entered on every request.
    """

    __slots__ = ("_conn", "_database", "_in_transaction", "_transaction", "_translate")

    def __init__(self, database: Database, in_transaction: bool, translate: bool = True) -> None:
        self._database = database
        self._in_transaction = in_transaction
        self._translate = translate
        self._conn: Connection | None = None
        self._transaction: Any = None

    async def __aenter__(self) -> Connection:
        database = self._database
        await database._turns.acquire()  # FIFO: see Database
        try:
            conn: Connection = await database._pool.acquire()
        except BaseException as exc:
            database._turns.release()
            self._raise_mapped(exc)
            raise
        self._conn = conn
        if self._in_transaction:
            self._transaction = conn.transaction()
            try:
                await self._transaction.start()
            except BaseException as exc:
                await self._release()
                self._raise_mapped(exc)
                raise
        return conn

    async def _release(self) -> None:
        try:
            await self._database._pool.release(self._conn)
        finally:
            self._conn = None
            self._database._turns.release()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            try:
                if self._transaction is not None:
                    await (self._transaction.rollback() if exc is not None else self._transaction.commit())
            finally:
                await self._release()
        except Exception as failure:
            self._raise_mapped(failure)
            raise
        if exc is not None:
            self._raise_mapped(exc)  # otherwise the original exception carries on

    def _raise_mapped(self, exc: BaseException) -> None:
        if self._translate:
            _raise_translated(exc)


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


def translated(exc: BaseException) -> BaseException:
    """The API error for a driver error a client can cause (or wait out), by constraint name or SQLSTATE;
    anything else comes back unchanged (and ends as a logged 500)."""
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        problem = errors.BY_CONSTRAINT.get(getattr(exc, "constraint_name", None) or "")
        if problem is not None:
            return problem.error()
    if isinstance(exc, asyncpg.NumericValueOutOfRangeError):  # a sum past the integer columns' range
        return errors.OUT_OF_RANGE.error()
    if isinstance(
        exc, (asyncpg.LockNotAvailableError, asyncpg.SerializationError, asyncpg.DeadlockDetectedError)
    ):
        return errors.REQUEST_IN_PROGRESS.error()
    if isinstance(exc, _UNAVAILABLE):
        log.warning("database unavailable: %s", type(exc).__name__)
        return errors.UNAVAILABLE.error()
    return exc


_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.QueryCanceledError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    # Refused at connect: the database was dropped (3D000) or is not accepting connections (55000;
    # its subclass 55P03 lock_not_available is a 409 above).
    asyncpg.InvalidCatalogNameError,
    asyncpg.ObjectNotInPrerequisiteStateError,
    # A pooled connection whose server went away while it sat idle is left mid-protocol.
    asyncpg.exceptions.InternalClientError,
)
