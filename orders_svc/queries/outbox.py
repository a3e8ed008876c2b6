"""sql/outbox.sql: the relay's and housekeeping's statements. The outbox is global: these are operator
queries, not tenant ones, so they take no tenant."""

import uuid
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from ..db import Connection
from . import deleted, statement

BOUND_RELAY_TRANSACTION = statement("bound_relay_transaction")
CLAIM_OUTBOX_BATCH = statement("claim_outbox_batch")
MARK_OUTBOX_PUBLISHED = statement("mark_outbox_published")
RECORD_OUTBOX_FAILURES = statement("record_outbox_failures")
RETRY_DEAD_OUTBOX = statement("retry_dead_outbox")
PURGE_PUBLISHED_OUTBOX = statement("purge_published_outbox")
WAIT_FOR_OUTBOX_WRITERS = statement("wait_for_outbox_writers")
OUTBOX_BACKLOG = statement("outbox_backlog")
BOUND_LOCK_WAIT = statement("bound_lock_wait")
OUTBOX_STATUS = statement("outbox_status")


class OutboxEvent(NamedTuple):
    id: uuid.UUID
    event_type: str
    order_id: uuid.UUID
    order_version: int
    tenant_id: str
    payload: Any
    attempts: int
    created_at: datetime | None = None
    traceparent: str | None = None  # of the request that wrote the event, when it was traced


class OutboxBacklog(NamedTuple):
    """The undelivered events of one type."""

    event_type: str
    pending: int
    backing_off: int
    dead: int
    oldest_pending_age: timedelta | None  # None: nothing pending (only dead letters)


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
    return deleted(await conn.execute(PURGE_PUBLISHED_OUTBOX, older_than, limit))


async def wait_for_outbox_writers(conn: Connection) -> int:
    """Wait for the transactions inserting events right now to end; how many there were."""
    return int(await conn.fetchval(WAIT_FOR_OUTBOX_WRITERS))


async def bound_lock_wait(conn: Connection, limit: timedelta) -> None:
    await conn.execute(BOUND_LOCK_WAIT, str(max(1, int(limit.total_seconds() * 1000))))


async def outbox_status(conn: Connection) -> list[OutboxBacklog]:
    """Per event type with undelivered events; an empty list when everything was published."""
    return [OutboxBacklog(*row) for row in await conn.fetch(OUTBOX_STATUS)]


async def outbox_backlog(conn: Connection) -> tuple[int, int, float]:
    """Pending events, dead-lettered events, and the age in seconds of the oldest pending one (0: none)."""
    row = await conn.fetchrow(OUTBOX_BACKLOG)
    assert row is not None
    return int(row[0]), int(row[1]), float(row[2])
