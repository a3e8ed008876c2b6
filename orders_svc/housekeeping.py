"""Housekeeping: delete expired idempotency keys and long-published outbox rows, in small batches."""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import NamedTuple

from .db import Connection, Database, create_pool
from .queries import idempotency, outbox
from .settings import Settings

log = logging.getLogger("orders_svc.housekeeping")


class Purged(NamedTuple):
    idempotency_keys: int
    outbox_events: int


async def purge(pool: Database, settings: Settings) -> Purged:
    """Delete what has expired, one bounded DELETE (and so one short transaction) at a time.

    Unpublished and dead-lettered outbox rows are never deleted: only published ones past the retention.
    """
    batch = settings.purge_batch_size
    keys = await _drain(pool, batch, lambda conn: idempotency.purge_expired_idempotency_keys(conn, batch))
    events = await _drain(
        pool, batch, lambda conn: outbox.purge_published_outbox(conn, settings.outbox_retention, batch)
    )
    purged = Purged(keys, events)
    if keys or events:
        log.info("purged", extra=purged._asdict())
    return purged


async def _drain(pool: Database, batch: int, delete: Callable[[Connection], Awaitable[int]]) -> int:
    total = 0
    while True:
        async with pool.acquire() as conn:
            deleted = await delete(conn)
        total += deleted
        if deleted < batch:
            return total


async def run(settings: Settings, dsn: str) -> Purged:
    """The `orders-svc purge` command: one full purge with a pool of its own."""
    pool = await create_pool(replace(settings, pool_min=1, pool_max=1), dsn)
    try:
        return await purge(pool, settings)
    finally:
        await pool.close()
