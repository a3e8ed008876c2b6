"""Housekeeping: expired idempotency keys, long-published outbox rows and old webhook delivery ids deleted,
expired stock reservations cancelled, in small batches."""

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import NamedTuple

from . import states
from .db import Connection, Database, create_pool
from .queries import idempotency, outbox, payments, stock
from .queries.orders import Target, cancel_order
from .settings import Settings

log = logging.getLogger("orders_svc.housekeeping")


class Purged(NamedTuple):
    idempotency_keys: int
    outbox_events: int
    expired_reservations: int = 0
    webhook_deliveries: int = 0


async def purge(pool: Database, settings: Settings) -> Purged:
    """Delete what has expired, one bounded DELETE (and so one short transaction) at a time.

    Unpublished and dead-lettered outbox rows are never deleted: only published ones past the retention.
    """
    batch = settings.purge_batch_size
    keys = await _drain(pool, batch, lambda conn: idempotency.purge_expired_idempotency_keys(conn, batch))
    events = await _drain(
        pool, batch, lambda conn: outbox.purge_published_outbox(conn, settings.outbox_retention, batch)
    )
    expired = await expire_reservations(pool, batch)
    # A delivery id is remembered past the provider's retries (ORDERS_WEBHOOK_RETENTION_HOURS): a retry
    # arriving after the purge would be processed again, and find its payment settled already (200 or 409).
    deliveries = await _drain(
        pool, batch, lambda conn: payments.purge_webhook_deliveries(conn, settings.webhook_retention, batch)
    )
    purged = Purged(keys, events, expired, deliveries)
    if any(purged):
        log.info("purged", extra=purged._asdict())
    return purged


async def expire_reservations(pool: Database, batch: int) -> int:
    """Cancel the orders whose reservation ran out (still draft or confirmed), `batch` at a time, each as a
    client's cancel is: cancel_order in its own transaction, with its stock back and its orders.cancelled
    event (reason reservation_expired). Several processes can run this at once: an order another one cancelled
    first no longer matches the cancel's guard, and is counted by that one."""
    total = 0
    while True:
        now = datetime.now(UTC)
        async with pool.acquire() as conn:
            due = await stock.select_due_reservations(conn, batch, now)
            for tenant, order_id in due:
                target = Target(tenant, order_id, None)
                async with conn.transaction():
                    reason = states.RESERVATION_EXPIRED
                    cancelled = await cancel_order(conn, target, uuid.uuid4(), now, reason)
                total += cancelled is not None
        if len(due) < batch:
            return total


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
