"""One typed function per SQL block: connection first, tenant second; they return rows, never HTTP errors."""

import uuid
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import asyncpg

from .db import Connection
from .resources import load_sql

_SQL = load_sql()
# Looked up at import, so a renamed or missing block fails at start-up, not on the first request.
CREATE_ORDER = _SQL["create_order"]
CREATE_ORDER_OVER_EXPIRED_KEY = _SQL["create_order_over_expired_key"]
SELECT_ORDER = _SQL["select_order"]
CONFIRM_ORDER = _SQL["confirm_order"]
CLOSE_ORDER = _SQL["close_order"]
LIST_ORDERS_FIRST = _SQL["list_orders_first"]
LIST_ORDERS_AFTER = _SQL["list_orders_after"]
SELECT_IDEMPOTENCY_KEY = _SQL["select_idempotency_key"]
CLAIM_IDEMPOTENCY_KEY = _SQL["claim_idempotency_key"]
CLAIM_EXPIRED_IDEMPOTENCY_KEY = _SQL["claim_expired_idempotency_key"]
STORE_IDEMPOTENT_RESPONSE = _SQL["store_idempotent_response"]
APPLIED_MIGRATIONS = _SQL["applied_migrations"]


class OrderRow(NamedTuple):
    id: uuid.UUID
    tenant_id: str
    status: str
    version: int
    total_cents: int | None
    created_at: datetime
    updated_at: datetime


class StoredResponse(NamedTuple):
    fingerprint: bytes
    status: int | None
    headers: dict[str, str] | None
    body: bytes | None


async def create_order(
    conn: Connection,
    tenant_id: str,
    key: str,
    fingerprint: bytes,
    headers: dict[str, str],
    body: bytes,
    order_id: uuid.UUID,
    ttl: timedelta,
    created_at: datetime,
    over_expired_key: bool = False,
) -> bool:
    """Claim the key, store the response and insert the order; False when the key exists (or, with
    `over_expired_key`, exists and is live): nothing was written then."""
    statement = CREATE_ORDER_OVER_EXPIRED_KEY if over_expired_key else CREATE_ORDER
    row = await conn.fetchrow(
        statement, tenant_id, key, fingerprint, headers, body, order_id, ttl, created_at
    )
    return row is not None


async def select_order(conn: Connection, tenant_id: str, order_id: uuid.UUID) -> OrderRow | None:
    row = await conn.fetchrow(SELECT_ORDER, tenant_id, order_id)
    return None if row is None else OrderRow(*row)


async def confirm_order(
    conn: Connection, tenant_id: str, order_id: uuid.UUID, versions: list[int] | None, total: int
) -> OrderRow | None:
    row = await conn.fetchrow(CONFIRM_ORDER, tenant_id, order_id, versions, total)
    return None if row is None else OrderRow(*row)


async def close_order(
    conn: Connection,
    tenant_id: str,
    order_id: uuid.UUID,
    versions: list[int] | None,
    event_id: uuid.UUID,
) -> OrderRow | None:
    row = await conn.fetchrow(CLOSE_ORDER, tenant_id, order_id, versions, event_id)
    return None if row is None else OrderRow(*row)


async def list_orders(
    conn: Connection, tenant_id: str, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[OrderRow]:
    if after is None:
        rows = await conn.fetch(LIST_ORDERS_FIRST, tenant_id, limit)
    else:
        rows = await conn.fetch(LIST_ORDERS_AFTER, tenant_id, after[0], after[1], limit)
    return [OrderRow(*row) for row in rows]


async def select_idempotency_key(conn: Connection, tenant_id: str, key: str) -> StoredResponse | None:
    row = await conn.fetchrow(SELECT_IDEMPOTENCY_KEY, tenant_id, key)
    return None if row is None else StoredResponse(*row)


async def claim_idempotency_key(
    conn: Connection, tenant_id: str, key: str, fingerprint: bytes, ttl: timedelta, expired: bool = False
) -> bool:
    """Claim a new key (or, with `expired`, take over an expired one); False when it exists (is live)."""
    statement = CLAIM_EXPIRED_IDEMPOTENCY_KEY if expired else CLAIM_IDEMPOTENCY_KEY
    return await conn.fetchrow(statement, tenant_id, key, fingerprint, ttl) is not None


async def store_idempotent_response(
    conn: Connection, tenant_id: str, key: str, status: int, headers: dict[str, str], body: bytes
) -> None:
    await conn.execute(STORE_IDEMPOTENT_RESPONSE, tenant_id, key, status, headers, body)


async def applied_migrations(conn: Connection) -> set[str]:
    """Migration ids yoyo recorded as applied; none when it never ran here (its table does not exist)."""
    try:
        return {row[0] for row in await conn.fetch(APPLIED_MIGRATIONS)}
    except asyncpg.UndefinedTableError:
        return set()


# The outbox relay and housekeeping (sql/outbox.sql). The outbox is global: these are operator queries, not
# tenant ones, so they take no tenant.
BOUND_RELAY_TRANSACTION = _SQL["bound_relay_transaction"]
CLAIM_OUTBOX_BATCH = _SQL["claim_outbox_batch"]
MARK_OUTBOX_PUBLISHED = _SQL["mark_outbox_published"]
RECORD_OUTBOX_FAILURES = _SQL["record_outbox_failures"]
RETRY_DEAD_OUTBOX = _SQL["retry_dead_outbox"]
PURGE_PUBLISHED_OUTBOX = _SQL["purge_published_outbox"]
PURGE_EXPIRED_IDEMPOTENCY_KEYS = _SQL["purge_expired_idempotency_keys"]


class OutboxEvent(NamedTuple):
    id: uuid.UUID
    event_type: str
    order_id: uuid.UUID
    order_version: int
    tenant_id: str
    payload: Any
    attempts: int


class OutboxFailure(NamedTuple):
    id: uuid.UUID
    attempts: int
    dead: bool


async def bound_relay_transaction(conn: Connection, idle_limit: timedelta) -> None:
    await conn.execute(BOUND_RELAY_TRANSACTION, str(int(idle_limit.total_seconds() * 1000)))


async def claim_outbox_batch(conn: Connection, limit: int) -> list[OutboxEvent]:
    """Lock due events until the caller's transaction ends; at most one per order, in creation order."""
    return [OutboxEvent(*row) for row in await conn.fetch(CLAIM_OUTBOX_BATCH, limit)]


async def mark_outbox_published(conn: Connection, event_ids: list[uuid.UUID]) -> None:
    await conn.execute(MARK_OUTBOX_PUBLISHED, event_ids)


async def record_outbox_failures(
    conn: Connection,
    failures: list[tuple[uuid.UUID, str]],
    backoff_base: timedelta,
    backoff_cap: timedelta,
    max_attempts: int,
) -> list[OutboxFailure]:
    rows = await conn.fetch(
        RECORD_OUTBOX_FAILURES,
        [event_id for event_id, _ in failures],
        [error for _, error in failures],
        backoff_base.total_seconds(),
        backoff_cap.total_seconds(),
        max_attempts,
    )
    return [OutboxFailure(*row) for row in rows]


async def retry_dead_outbox(conn: Connection) -> int:
    row = await conn.fetchrow(RETRY_DEAD_OUTBOX)
    assert row is not None
    return int(row[0])


async def purge_published_outbox(conn: Connection, older_than: timedelta, limit: int) -> int:
    return _deleted(await conn.execute(PURGE_PUBLISHED_OUTBOX, older_than, limit))


async def purge_expired_idempotency_keys(conn: Connection, limit: int) -> int:
    return _deleted(await conn.execute(PURGE_EXPIRED_IDEMPOTENCY_KEYS, limit))


def _deleted(status: str) -> int:
    """The row count of a `DELETE n` command tag."""
    return int(status.rsplit(" ", 1)[-1])
