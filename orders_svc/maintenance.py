"""Operator commands on the database, answered without SQL: the outbox's backlog (`orders-svc outbox status`)
and one tenant's idempotency key (`orders-svc keys show|forget`)."""

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any

import msgspec

from .db import Connection, create_pool
from .errors import ApiError
from .preconditions import parse_idempotency_key
from .queries import idempotency, outbox
from .queries.idempotency import KeyRecord
from .queries.outbox import OutboxBacklog
from .schemas import TENANT_PATTERN
from .settings import Settings


class BadArgument(ValueError):
    """A tenant or key the service itself would refuse; the message says which."""


@asynccontextmanager
async def _connection(settings: Settings, dsn: str) -> AsyncIterator[Connection]:
    pool = await create_pool(replace(settings, pool_min=1, pool_max=1), dsn)
    try:
        async with pool.acquire() as conn:
            yield conn
    finally:
        await pool.close()


async def outbox_status(settings: Settings, dsn: str) -> list[OutboxBacklog]:
    async with _connection(settings, dsn) as conn:
        return await outbox.outbox_status(conn)


def checked_key(tenant: str, key: str) -> tuple[str, str]:
    """The tenant and key as a request would carry them (one pair of quotes around the key stripped)."""
    if not re.fullmatch(TENANT_PATTERN, tenant):
        raise BadArgument(f"tenant {tenant!r} is not 1-64 characters of [A-Za-z0-9._:-]")
    try:
        return tenant, parse_idempotency_key(key)
    except ApiError as exc:
        raise BadArgument(f"key {key!r}: {exc.message}") from None


async def key_command(settings: Settings, dsn: str, command: str, tenant: str, key: str) -> str | None:
    """`show` or `forget` the tenant's key: what to print, or None when the tenant has no such key."""
    async with _connection(settings, dsn) as conn:
        if command == "show":
            record = await idempotency.select_key_record(conn, tenant, key)
            return None if record is None else key_json(tenant, key, record).decode()
        created_at = await idempotency.forget_key(conn, tenant, key)
    if created_at is None:
        return None
    stored = created_at.isoformat()
    return f"forgot key {key!r} of tenant {tenant!r} (stored {stored}): a request with it runs anew"


# ------------------------------------------------------------------------------------------- rendering
def _seconds(age: timedelta | None) -> float | None:
    return None if age is None else round(age.total_seconds(), 3)


def backlog_json(backlog: list[OutboxBacklog]) -> bytes:
    rows = [{**row._asdict(), "oldest_pending_age": _seconds(row.oldest_pending_age)} for row in backlog]
    total = {
        "pending": sum(r.pending for r in backlog),
        "backing_off": sum(r.backing_off for r in backlog),
        "dead": sum(r.dead for r in backlog),
        "oldest_pending_age": max((r["oldest_pending_age"] or 0 for r in rows), default=0) or None,
    }
    return msgspec.json.encode({"by_event_type": rows, "total": total})


def backlog_text(backlog: list[OutboxBacklog]) -> str:
    if not backlog:
        return "outbox: every event published; none pending, none dead-lettered"
    lines = [f"{'event type':<20} {'pending':>8} {'backing off':>12} {'dead':>6}  oldest pending"]
    for row in backlog:
        age = "-" if row.oldest_pending_age is None else f"{row.oldest_pending_age.total_seconds():.1f} s"
        lines.append(f"{row.event_type:<20} {row.pending:>8} {row.backing_off:>12} {row.dead:>6}  {age}")
    return "\n".join(lines)


def oldest_pending(backlog: list[OutboxBacklog]) -> timedelta:
    return max(
        (r.oldest_pending_age for r in backlog if r.oldest_pending_age is not None), default=timedelta()
    )


def key_json(tenant: str, key: str, record: KeyRecord) -> bytes:
    document: dict[str, Any] = {
        "tenantId": tenant,
        "key": key,
        "createdAt": record.created_at,
        "expiresAt": record.expires_at,
        "expired": record.expired,
        "inProgress": record.status is None,
        "responseStatus": record.status,
    }
    if record.body is not None:
        try:
            document["responseBody"] = msgspec.json.decode(record.body)
        except msgspec.DecodeError:
            document["responseBody"] = record.body.decode("utf-8", "replace")
    return msgspec.json.encode(document)
