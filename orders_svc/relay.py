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
import sys
import time
import uuid
from dataclasses import replace
from datetime import timedelta

import asyncpg
import msgspec

from . import housekeeping
from .db import Database, create_pool
from .observability import metrics, tracing
from .publishers import BrokerUnavailable, Publisher, describe
from .queries import outbox as queries
from .queries.outbox import OutboxEvent
from .settings import Settings, SettingsError

log = logging.getLogger("orders_svc.relay")
_encode = msgspec.json.encode

CHANNEL = "orders_outbox"
# What a relay survives by logging and retrying after a poll interval: the database or network going away.
TRANSIENT = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
# A publish that failed because the broker could not take anything just now (TimeoutError: no ack in time).
BROKER_UNAVAILABLE = (BrokerUnavailable, TimeoutError)


class Outage:
    """The broker is unavailable: no event is charged for it; the relay probes with one event at a time."""

    def __init__(self, error: str) -> None:
        self.since = time.monotonic()
        self.error = error
        self.probes = 0

    def delay(self, settings: Settings) -> timedelta:
        """The backoff base, doubling per failed probe, up to ORDERS_RELAY_PROBE_MAX_MS."""
        return min(settings.relay_backoff_base * (1 << min(self.probes, 20)), settings.relay_probe_max)


class Relay:
    def __init__(self, settings: Settings, dsn: str, publisher: Publisher) -> None:
        self.settings = settings
        self.dsn = dsn
        self.publisher = publisher
        self.outage: Outage | None = None
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._next_purge = 0.0
        self.last_cycle = time.monotonic()  # for /healthz: the loop is turning

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; the batch in flight is finished (published and committed) first."""
        pool = await create_pool(replace(self.settings, pool_min=1, pool_max=2), self.dsn)
        self._next_purge = time.monotonic()
        log.info("relay started", extra={"batch_size": self.settings.relay_batch_size})
        failures = 0
        draining = False
        try:
            while not stop.is_set():
                self.last_cycle = time.monotonic()
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
                if claimed and self.outage is not None:
                    # The broker is away: pause as a whole (a NOTIFY does not cut it short), then probe.
                    await _first_of(asyncio.Event(), stop, self.outage.delay(self.settings))
                elif claimed:
                    draining = True  # claim again at once, until a claim comes back empty
                elif draining and failures == 0:
                    # The outbox only NOTIFYs when a commit finds no older event pending, and that check runs
                    # before its commit: wait until such commits are done, then claim once more before idling.
                    draining = False
                    await self._wait_for_writers(pool)
                else:
                    draining = False
                    await _first_of(
                        self._wake, stop, _retry_delay(self.settings.relay_poll_interval, failures)
                    )
        finally:
            await self._unlisten()
            await pool.close()
            log.info("relay stopped")

    async def relay_batch(self, pool: Database) -> int:
        """Claim, publish and settle one batch in one transaction; returns how many events were claimed.

        Only the events the broker refused are charged an attempt. When it is unavailable (no responders,
        no connection, no ack in time) nothing is charged: the relay enters an outage and probes.
        """
        settings = self.settings
        limit = 1 if self.outage is not None else settings.relay_batch_size
        unavailable: list[BaseException] = []
        async with pool.acquire() as conn, conn.transaction():
            await queries.bound_relay_transaction(
                conn, settings.relay_publish_timeout * 2 + timedelta(seconds=1)
            )
            events = await queries.claim_outbox_batch(conn, limit)
            if not events:
                return 0
            metrics.RELAY_BATCH.observe(len(events))
            # A batch holds at most one event per order, so publishing it concurrently keeps per-order order.
            outcomes = await asyncio.gather(*(self._publish(e) for e in events), return_exceptions=True)
            published: list[uuid.UUID] = []
            refused: list[tuple[uuid.UUID, str]] = []
            for event, outcome in zip(events, outcomes, strict=True):
                if outcome is None:
                    published.append(event.id)
                elif isinstance(outcome, BROKER_UNAVAILABLE):
                    unavailable.append(outcome)
                elif isinstance(outcome, Exception):
                    refused.append((event.id, describe(outcome)))
                else:
                    raise outcome  # cancelled: the transaction rolls back, the events stay due
            if published:
                await queries.mark_outbox_published(conn, published)
            if refused:
                await self._record_failures(conn, refused)
        if refused:
            metrics.RELAY_FAILURES.labels("refused").inc(len(refused))
        if unavailable:
            metrics.RELAY_FAILURES.labels("unavailable").inc(len(unavailable))
        self._track_broker(published, unavailable)
        log.debug(
            "batch relayed",
            extra={"published": len(published), "refused": len(refused), "unavailable": len(unavailable)},
        )
        return len(events)

    def _track_broker(self, published: list[uuid.UUID], unavailable: list[BaseException]) -> None:
        """One line when the broker goes away, one when a publish succeeds again; nothing per event."""
        if unavailable and self.outage is None:
            self.outage = Outage(describe(unavailable[0]))
            log.warning(
                "broker unavailable; publishing paused, probing with one event",
                extra={"error": self.outage.error, "waiting_events": len(unavailable)},
            )
        elif unavailable and self.outage is not None:
            self.outage.probes += 1
        elif published and self.outage is not None:
            outage, self.outage = self.outage, None
            log.info(
                "broker available again; publishing resumed",
                extra={"outage_seconds": round(time.monotonic() - outage.since, 1), "probes": outage.probes},
            )

    async def _publish(self, event: OutboxEvent) -> None:
        """Publish one event; counted and its lag measured once acknowledged (traced when tracing is on)."""
        span = None
        if tracing.state.tracer is not None:
            span = tracing.start_publish(event.event_type, event.traceparent)
            event = event._replace(traceparent=tracing.traceparent(span))
        try:
            await asyncio.wait_for(
                self.publisher.publish(event), self.settings.relay_publish_timeout.total_seconds()
            )
        except BaseException as exc:
            if span is not None:
                tracing.end_publish(span, exc)
            raise
        if span is not None:
            tracing.end_publish(span, None)
        metrics.RELAY_PUBLISHED.labels(event.event_type).inc()
        if event.created_at is not None:
            metrics.RELAY_LAG.observe(max(0.0, time.time() - event.created_at.timestamp()))

    def health(self) -> tuple[bool, bytes]:
        """Healthy while the loop turns (a cycle within three poll intervals, at least a minute); the
        broker's state is reported, not judged: restarting the relay would not bring the broker back."""
        stale = max(self.settings.relay_poll_interval.total_seconds() * 3, 60.0)
        ok = time.monotonic() - self.last_cycle < stale
        body = {"status": "ok" if ok else "stalled", "brokerAvailable": self.outage is None}
        return ok, _encode(body)

    async def _wait_for_writers(self, pool: Database) -> None:
        """Wait (at most a poll interval) for the transactions inserting events right now to commit."""
        try:
            async with pool.acquire() as conn, conn.transaction():
                await queries.bound_lock_wait(conn, self.settings.relay_poll_interval)
                await queries.wait_for_outbox_writers(conn)
        except asyncpg.LockNotAvailableError:
            log.debug("an outbox writer is still running; the poll picks its event up")

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
                metrics.RELAY_DEAD.inc()
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


def longest_retry(settings: Settings) -> timedelta:
    """From a publish that may have been stored (its ack lost) to its retry, at most: the ack timeout, the
    longest backoff or probe delay, then up to a poll interval before a relay claims the event again."""
    pause = max(settings.relay_backoff_cap, settings.relay_probe_max)
    return settings.relay_publish_timeout + pause + settings.relay_poll_interval


def within_duplicate_window(settings: Settings, window: timedelta | None) -> Settings:
    """Retry delays capped so that a retry reaches JetStream while it still drops the repeat by Nats-Msg-Id.

    `window` is the duplicate window of the stream in use (None: the publisher does not deduplicate).
    """
    if window is None or longest_retry(settings) <= window:
        return settings
    room = window - settings.relay_publish_timeout - settings.relay_poll_interval
    cap = max(room, timedelta(milliseconds=10))
    bounded = replace(
        settings,
        relay_backoff_cap=min(settings.relay_backoff_cap, cap),
        relay_backoff_base=min(settings.relay_backoff_base, cap),
        relay_probe_max=min(settings.relay_probe_max, cap),
    )
    extra = {
        "duplicate_window_s": window.total_seconds(),
        "longest_retry_s": longest_retry(settings).total_seconds(),
        "retry_cap_s": cap.total_seconds(),
    }
    if longest_retry(bounded) > window:
        log.warning(
            "the stream's duplicate window is shorter than the publish timeout and poll interval: "
            "a retried event may be stored twice; raise the window",
            extra=extra,
        )
    else:
        log.info("retry delays capped to stay inside the stream's duplicate window", extra=extra)
    return bounded


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
    from .publishers import NatsOptions, open_publisher

    if kind == "nats":
        try:
            NatsOptions.from_settings(settings)  # a bad server list or file is not retried: it stays bad
        except SettingsError as exc:
            print(f"orders-svc: configuration error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    tracing.configure()
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
            log.log(
                logging.WARNING if attempt == 0 else logging.DEBUG,
                "publisher unavailable; retrying",
                extra={"publisher": kind, "error": describe(exc)},
            )
            await _first_of(asyncio.Event(), stop, delay)
    if publisher is None:
        return
    server = None
    try:
        settings = within_duplicate_window(settings, getattr(publisher, "duplicate_window", None))
        relay = Relay(settings, dsn, publisher)
        if settings.relay_metrics_port is not None:
            server = await metrics.serve_relay(settings.host, settings.relay_metrics_port, relay.health)
        await relay.run(stop)
    finally:
        if server is not None:
            server.close()
        await publisher.close()


async def run_retry_dead(settings: Settings, dsn: str) -> int:
    pool = await create_pool(replace(settings, pool_min=1, pool_max=1), dsn)
    try:
        return await retry_dead(pool)
    finally:
        await pool.close()
