"""Use cases. Connections and transactions are opened here: handlers never see one, queries never open one."""

import uuid
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from . import queries
from .db import Connection, Pool, connection, transaction
from .errors import ApiError, conflict
from .pagination import encode_cursor
from .queries import OrderRow, StoredResponse
from .schemas import Order, OrderPage, encoder, rfc3339


class Reply(NamedTuple):
    status: int
    body: bytes
    headers: dict[str, str]
    replayed: bool = False


class Idempotency(NamedTuple):
    key: str
    fingerprint: bytes
    ttl: timedelta


def to_order(row: OrderRow) -> Order:
    return Order(
        id=row.id,
        tenant_id=row.tenant_id,
        status=row.status,  # type: ignore[arg-type]
        version=row.version,
        total_cents=row.total_cents,
        created_at=rfc3339(row.created_at),
        updated_at=rfc3339(row.updated_at),
    )


def order_reply(row: OrderRow, status: int = 200) -> Reply:
    return Reply(status, encoder.encode(to_order(row)), {"etag": f'"{row.version}"'})


def replay(stored: StoredResponse | None, fingerprint: bytes) -> Reply | None:
    """The stored answer for a retried request; None when the key is gone (expired meanwhile)."""
    if stored is None:
        return None
    if stored.fingerprint != fingerprint:
        raise conflict(
            "idempotency_key_reused",
            "this Idempotency-Key was already used for a different request",
        )
    if stored.status is None or stored.body is None:
        raise in_progress()
    return Reply(200, stored.body, stored.headers or {}, replayed=True)


def in_progress() -> ApiError:
    return ApiError(
        409,
        "a request with this Idempotency-Key is still in progress; retry shortly",
        {"reason": "request_in_progress"},
        {"Retry-After": "1"},
    )


async def create_order(pool: Pool, tenant: str, idem: Idempotency) -> Reply:
    """Claim the key, insert the draft and store its response in one statement; a live key replays.

    The first claim leaves an existing key untouched, so a replay only reads. A key found expired is taken
    over by the next attempt (which loses, and replays, if another request took it over first).
    """
    order_id = uuid.uuid4()
    now = datetime.now(UTC)
    row = OrderRow(order_id, tenant, "draft", 1, None, now, now)
    reply = order_reply(row, 201)
    reply.headers["location"] = f"/orders/{order_id}"
    key, fingerprint = idem.key, idem.fingerprint
    async with connection(pool) as conn:
        for over_expired_key in (False, True, True):
            if await queries.create_order(
                conn,
                tenant,
                key,
                fingerprint,
                reply.headers,
                reply.body,
                order_id,
                idem.ttl,
                now,
                over_expired_key,
            ):
                return reply
            replayed = replay(await queries.select_idempotency_key(conn, tenant, key), fingerprint)
            if replayed is not None:
                return replayed
    raise in_progress()


async def explain_failed_write(
    conn: Connection, tenant: str, order_id: uuid.UUID, versions: list[int] | None, action: str
) -> ApiError:
    """Why a guarded UPDATE matched nothing, in the contract's order: missing, then version, then state."""
    current = await queries.select_order(conn, tenant, order_id)
    if current is None:
        return not_found()
    if versions is not None and current.version not in versions:
        return ApiError(409, "stale version", {"reason": "stale_version", "currentVersion": current.version})
    return conflict(
        "invalid_transition",
        f"cannot {action} an order that is {current.status}",
        currentStatus=current.status,
    )


def not_found() -> ApiError:
    return ApiError(404, "order not found")


async def confirm_order(
    pool: Pool,
    tenant: str,
    order_id: uuid.UUID,
    versions: list[int] | None,
    total_cents: int,
    idem: Idempotency | None,
) -> Reply:
    """draft -> confirmed, guarded by the version in the UPDATE itself."""
    async with _write_scope(pool, idem) as conn:
        if idem is not None and (early := await _claim(conn, tenant, idem)) is not None:
            return early
        row = await queries.confirm_order(conn, tenant, order_id, versions, total_cents)
        if row is None:
            raise await explain_failed_write(conn, tenant, order_id, versions, "confirm")
        return await _finish(conn, tenant, idem, order_reply(row))


async def close_order(
    pool: Pool,
    tenant: str,
    order_id: uuid.UUID,
    versions: list[int] | None,
    idem: Idempotency | None,
) -> Reply:
    """confirmed -> closed plus its outbox event, in one statement (and so one transaction)."""
    async with _write_scope(pool, idem) as conn:
        if idem is not None and (early := await _claim(conn, tenant, idem)) is not None:
            return early
        row = await queries.close_order(conn, tenant, order_id, versions, uuid.uuid4())
        if row is None:
            raise await explain_failed_write(conn, tenant, order_id, versions, "close")
        return await _finish(conn, tenant, idem, order_reply(row))


def _write_scope(pool: Pool, idem: Idempotency | None) -> AbstractAsyncContextManager[Connection]:
    # A keyed write spans several statements (claim, write, store) and needs a transaction; a plain one is
    # a single statement and runs in autocommit, saving the BEGIN/COMMIT round trips.
    return transaction(pool) if idem is not None else connection(pool)


async def _claim(conn: Connection, tenant: str, idem: Idempotency) -> Reply | None:
    """Claim the key for this transaction, or the stored reply when it is live already.

    As for create: the first claim leaves an existing key untouched (a replay only reads); a key found
    expired is taken over by the second.
    """
    for expired in (False, True):
        if await queries.claim_idempotency_key(conn, tenant, idem.key, idem.fingerprint, idem.ttl, expired):
            return None
        replayed = replay(await queries.select_idempotency_key(conn, tenant, idem.key), idem.fingerprint)
        if replayed is not None:
            return replayed
    raise in_progress()  # the key vanished (purged) or expired again between the statements: retry


async def _finish(conn: Connection, tenant: str, idem: Idempotency | None, reply: Reply) -> Reply:
    if idem is not None:
        await queries.store_idempotent_response(
            conn, tenant, idem.key, reply.status, reply.headers, reply.body
        )
    return reply


async def get_order(pool: Pool, tenant: str, order_id: uuid.UUID) -> Reply:
    async with connection(pool) as conn:
        row = await queries.select_order(conn, tenant, order_id)
    if row is None:
        raise not_found()
    return order_reply(row)


async def require_order(pool: Pool, tenant: str, order_id: uuid.UUID) -> None:
    """404 unless the order exists for this tenant (so a missing If-Match on a missing order is a 404)."""
    async with connection(pool) as conn:
        if await queries.select_order(conn, tenant, order_id) is None:
            raise not_found()


async def list_orders(pool: Pool, tenant: str, after: tuple[datetime, uuid.UUID] | None, limit: int) -> bytes:
    """One page, newest first; fetching one extra row tells whether another page follows."""
    async with connection(pool) as conn:
        rows = await queries.list_orders(conn, tenant, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more else None
    return encoder.encode(OrderPage(items=[to_order(r) for r in rows], next_cursor=cursor))
