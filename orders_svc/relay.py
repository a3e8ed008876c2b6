"""The outbox relay: claim due events, publish them, mark them published; retry with backoff; dead letters.

Delivery is at least once. A batch is claimed with FOR UPDATE SKIP LOCKED and its row locks are held while the
(small) batch is published, then the outcome is committed in the same transaction. A relay that dies mid-batch
loses its transaction, so its rows are claimed again and re-published; the broker drops repeats by event id.
No lease column is needed: the locks vanish with the connection, and publishing a batch takes milliseconds
(bounded by the publish timeout, and by idle_in_transaction_session_timeout should a relay hang).
"""

import asyncio
import contextlib
import itertools
import logging
import signal
import time
import uuid
from dataclasses import replace
from datetime import timedelta

import asyncpg

from . import housekeeping
from .db import Database, create_pool
from .publishers import Publisher, describe
from .queries import outbox as queries
from .queries.outbox import OutboxEvent
from .settings import Settings

log = logging.getLogger("orders_svc.relay")

CHANNEL = "orders_outbox"
# What a relay survives by logging and retrying after a poll interval: the database or network going away.
TRANSIENT = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class Relay:
    def __init__(self, settings: Settings, dsn: str, publisher: Publisher) -> None:
        self.settings = settings
        self.dsn = dsn
        self.publisher = publisher
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._next_purge = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; the batch in flight is finished (published and committed) first."""
        pool = await create_pool(replace(self.settings, pool_min=1, pool_max=2), self.dsn)
        self._next_purge = time.monotonic()
        log.info("relay started", extra={"batch_size": self.settings.relay_batch_size})
        failures = 0
        try:
            while not stop.is_set():
                await self._listen(quiet=failures > 0)
                self._wake.clear()
                try:
                    claimed = await self.relay_batch(pool)
                    await self._purge_if_due(pool)
                    failures = 0
                except TRANSIENT as exc:
                    if failures == 0:  # once per outage, not once per retry
                        log.warning("relay cycle failed; retrying", extra={"error": describe(exc)})
                    failures += 1
                    claimed = 0
                # Drain until a claim comes back empty, then sleep: the outbox only NOTIFYs when a commit
                # finds it idle, so events committed while this relay was publishing come without one.
                if claimed == 0:
                    await _first_of(
                        self._wake, stop, _retry_delay(self.settings.relay_poll_interval, failures)
                    )
        finally:
            await self._unlisten()
            await pool.close()
            log.info("relay stopped")

    async def relay_batch(self, pool: Database) -> int:
        """Claim, publish and settle one batch in one transaction; returns how many events were claimed."""
        settings = self.settings
        async with pool.acquire() as conn, conn.transaction():
            await queries.bound_relay_transaction(
                conn, settings.relay_publish_timeout * 2 + timedelta(seconds=1)
            )
            events = await queries.claim_outbox_batch(conn, settings.relay_batch_size)
            if not events:
                return 0
            # A batch holds at most one event per order, so publishing it concurrently keeps per-order order.
            outcomes = await asyncio.gather(*(self._publish(e) for e in events), return_exceptions=True)
            published = [e.id for e, outcome in zip(events, outcomes, strict=True) if outcome is None]
            failed = [
                (e.id, describe(outcome))
                for e, outcome in zip(events, outcomes, strict=True)
                if isinstance(outcome, BaseException)
            ]
            if published:
                await queries.mark_outbox_published(conn, published)
            if failed:
                await self._record_failures(conn, failed)
        log.debug("batch relayed", extra={"published": len(published), "failed": len(failed)})
        return len(events)

    async def _publish(self, event: OutboxEvent) -> None:
        await asyncio.wait_for(
            self.publisher.publish(event), self.settings.relay_publish_timeout.total_seconds()
        )

    async def _record_failures(self, conn: asyncpg.Connection, failed: list[tuple[uuid.UUID, str]]) -> None:
        settings = self.settings
        errors = dict(failed)
        rows = await queries.record_outbox_failures(
            conn,
            failed,
            settings.relay_backoff_base,
            settings.relay_backoff_cap,
            settings.relay_max_attempts,
        )
        for row in rows:
            extra = {"event_id": str(row.id), "attempts": row.attempts, "error": errors[row.id]}
            if row.dead:
                log.error(
                    "outbox event dead-lettered; re-drive with `orders-svc outbox retry-dead`", extra=extra
                )
            else:
                log.warning("publish failed; will retry with backoff", extra=extra)

    async def _purge_if_due(self, pool: Database) -> None:
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + self.settings.purge_interval.total_seconds()
            await housekeeping.purge(pool, self.settings)

    async def _listen(self, quiet: bool = False) -> None:
        """LISTEN on a dedicated connection (a pooled one is UNLISTENed on release); polling covers gaps."""
        if self._listener is not None and not self._listener.is_closed():
            return
        try:
            self._listener = await asyncpg.connect(self.dsn, timeout=5)
            await self._listener.add_listener(CHANNEL, self._on_notify)
        except TRANSIENT as exc:
            self._listener = None
            if not quiet:
                log.warning("LISTEN unavailable; polling only", extra={"error": describe(exc)})

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _unlisten(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(*TRANSIENT):
                await self._listener.close(timeout=5)
            self._listener = None


def _retry_delay(poll_interval: timedelta, failures: int) -> timedelta:
    """The poll interval, doubling per consecutive failure up to 30 s while the database is away."""
    return min(poll_interval * (1 << min(failures, 20)), max(poll_interval, timedelta(seconds=30)))


async def _first_of(wake: asyncio.Event, stop: asyncio.Event, limit: timedelta) -> None:
    """Wait until a notification, a stop request or the poll interval, whichever comes first."""
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=limit.total_seconds(), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


async def retry_dead(pool: Database) -> int:
    """Return every dead-lettered event to the queue with a fresh attempt budget; how many there were."""
    async with pool.acquire() as conn:
        return await queries.retry_dead_outbox(conn)


async def run(settings: Settings, dsn: str, kind: str) -> None:
    """The `orders-svc relay` process: relay until SIGTERM or SIGINT, then finish the batch and return."""
    from .publishers import open_publisher

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    publisher = None
    for attempt in itertools.count():
        if stop.is_set():
            break
        opening = asyncio.ensure_future(open_publisher(kind, settings))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait((opening, stopping), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not opening.done():  # stopped while connecting
            opening.cancel()
            with contextlib.suppress(BaseException):
                await opening
            break
        try:
            publisher = opening.result()
            break
        except Exception as exc:  # the broker may not be up yet: keep trying, the outbox keeps the events
            delay = _retry_delay(settings.relay_poll_interval, attempt)
            log.warning("publisher unavailable; retrying", extra={"publisher": kind, "error": describe(exc)})
            await _first_of(asyncio.Event(), stop, delay)
    if publisher is None:
        return
    try:
        await Relay(settings, dsn, publisher).run(stop)
    finally:
        await publisher.close()


async def run_retry_dead(settings: Settings, dsn: str) -> int:
    pool = await create_pool(replace(settings, pool_min=1, pool_max=1), dsn)
    try:
        return await retry_dead(pool)
    finally:
        await pool.close()
