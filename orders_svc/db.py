"""The asyncpg pool, the one transaction helper, and the one place driver errors become API errors."""

import asyncio
from typing import Any

import asyncpg
import msgspec
from asyncpg import Connection, Pool

from . import errors
from .errors import log
from .settings import Settings

__all__ = ["Connection", "Pool", "connection", "create_pool", "transaction", "translated"]

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


class FairPool(asyncpg.Pool):  # type: ignore[misc]
    """asyncpg's pool, handing connections out first come, first served.

    asyncpg queues requests for a connection on an asyncio.Queue, where a request that asks while a released
    connection is on its way to the first waiter takes it instead, and the waiter queues again at the back.
    Under load, with more requests in flight than connections, the oldest waiters starved: a retry storm on
    one key had a p99 of 150-200 ms against a p50 of 6 ms. Requests here first take a turn from a FIFO
    semaphore as large as the pool (asyncio.Semaphore lets no one past its waiters), so asyncpg's queue
    always has a connection for whoever holds a turn.
    """

    __slots__ = ("turns",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.turns = asyncio.Semaphore(kwargs["max_size"])


async def create_pool(settings: Settings, dsn: str, *, generic_plans: bool = False) -> Pool:
    """The pool; `generic_plans` for the API's statements (see server_settings), not the relay's scans."""
    # asyncpg.create_pool(...) is `Pool(...)` with these defaults; FairPool takes the same arguments.
    pool = await FairPool(
        dsn,
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        init=_init_connection,
        reset=_keep_session,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        server_settings=server_settings(settings, generic_plans),
        command_timeout=max(statement_budget_ms(settings) / 1000 + 5, 10),
    )
    assert pool is not None
    return pool


class _Scope:
    """`async with`: a pooled connection (optionally inside a transaction); driver errors become ApiErrors.

    A plain class rather than stacked generator-based context managers: it is entered on every request.
    """

    __slots__ = ("_acquire", "_in_transaction", "_transaction", "_turns")

    def __init__(self, pool: Pool, in_transaction: bool) -> None:
        self._acquire = pool.acquire()
        self._in_transaction = in_transaction
        self._transaction: Any = None
        self._turns: asyncio.Semaphore | None = getattr(pool, "turns", None)

    async def __aenter__(self) -> Connection:
        if self._turns is not None:
            await self._turns.acquire()  # FIFO: see FairPool
        try:
            conn: Connection = await self._acquire.__aenter__()
        except BaseException as exc:
            self._release_turn()
            _raise_translated(exc)
            raise
        if self._in_transaction:
            self._transaction = conn.transaction()
            try:
                await self._transaction.start()
            except BaseException as exc:
                try:
                    await self._acquire.__aexit__(type(exc), exc, exc.__traceback__)
                finally:
                    self._release_turn()
                _raise_translated(exc)
                raise
        return conn

    def _release_turn(self) -> None:
        if self._turns is not None:
            self._turns.release()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            try:
                if self._transaction is not None:
                    await (self._transaction.rollback() if exc is not None else self._transaction.commit())
            finally:
                try:
                    await self._acquire.__aexit__(exc_type, exc, tb)
                finally:
                    self._release_turn()
        except Exception as failure:
            _raise_translated(failure)
            raise
        if exc is not None:
            _raise_translated(exc)  # otherwise the original exception carries on


def _raise_translated(exc: BaseException) -> None:
    mapped = translated(exc)
    if mapped is not exc:
        raise mapped from None


def transaction(pool: Pool) -> _Scope:
    """A connection inside one transaction, with driver errors translated."""
    return _Scope(pool, in_transaction=True)


def connection(pool: Pool) -> _Scope:
    """A pooled connection in autocommit, for single statements, with driver errors translated."""
    return _Scope(pool, in_transaction=False)


def translated(exc: BaseException) -> BaseException:
    """The API error for a driver error a client can cause (or wait out), by constraint name or SQLSTATE;
    anything else comes back unchanged (and ends as a logged 500)."""
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        problem = errors.BY_CONSTRAINT.get(getattr(exc, "constraint_name", None) or "")
        if problem is not None:
            return problem.error()
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
