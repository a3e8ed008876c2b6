"""Prometheus metrics, named after the OpenTelemetry semantic conventions (HTTP server, database client pool).

With several worker processes (`serve --workers N`) the CLI points PROMETHEUS_MULTIPROC_DIR at a fresh
directory before the workers start: each writes its values to files there and /metrics, whichever worker
answers it, adds them up (prometheus-client's multiprocess mode). Gauges of live state (active requests,
the pool) are summed over the live workers. The outbox backlog is not a process's value: it is read from
the database when scraped (an index range, cached for a second, so a scrape storm costs one query a second).
"""

import asyncio
import functools
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ..states import OrderStatus, Transition

__all__ = ["CONTENT_TYPE_LATEST"]

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# http.server.request.duration's advised boundaries (OpenTelemetry HTTP metrics), in seconds.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# One label value for every request no route matched: a scanner's paths never become series.
UNKNOWN_ROUTE = "unknown"
# The methods HTTP defines keep their name; any other is `_OTHER` (OpenTelemetry's rule, bounded labels).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
OUTBOX_CACHE_SECONDS = 1.0


class _State:
    """Whether the API records metrics (ORDERS_METRICS): set once by create_app; and the requests in progress,
    counted by the request middleware, recorded into http_server_active_requests with the pool's figures."""

    enabled = True
    active = 0


state = _State()

Observe = Callable[[float], None]
Increment = Callable[[], None]


class _LoopFamily(Collector):
    """A metric family changed only from the process's event loop, its values a list per label set."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        registry: CollectorRegistry = REGISTRY,
    ):
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self.series: dict[tuple[str, ...], list[float]] = {}
        registry.register(self)


class LoopHistogram(_LoopFamily):
    """A histogram family observed only from the serving process's event loop, a list of counts per label set.

    Every request observes two histograms (its duration, its wait for a connection). prometheus-client's
    Histogram takes a lock and checks its arguments per observation: two locked increments and five calls,
    about 4 % of the instructions of a get by id. Here an observation is a bisect and two additions on the
    loop's thread, which also serves the scrapes, so no lock is needed. The family is exposed as the library's
    would be (`_bucket` with `le`, `_count`, `_sum`; no `_created`). With several workers (multiprocess mode,
    values in shared files) the library's Histogram is used instead: see `histogram`.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        buckets: tuple[float, ...],
        registry: CollectorRegistry = REGISTRY,
    ):
        self.bounds = tuple(float(b) for b in buckets)
        super().__init__(name, documentation, labelnames, registry)

    def child(self, *labels: str) -> Observe:
        """The observe function of one label set: counts per bucket (the last one +Inf), then the sum."""
        counts = self.series.setdefault(labels, [0.0] * (len(self.bounds) + 2))
        bounds, total = self.bounds, len(self.bounds) + 1

        def observe(value: float) -> None:
            counts[bisect_left(bounds, value)] += 1
            counts[total] += value

        return observe

    def collect(self) -> Iterable[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        edges = [*(floatToGoString(b) for b in self.bounds), "+Inf"]  # type: ignore[no-untyped-call]
        for labels, counts in self.series.items():
            cumulative, buckets = 0.0, []
            for edge, count in zip(edges, counts[:-1], strict=True):  # the last is the sum
                cumulative += count
                buckets.append((edge, cumulative))
            family.add_metric(list(labels), buckets, counts[-1])
        yield family


class LoopCounter(_LoopFamily):
    """A counter family incremented only from the process's event loop, one cell per label set: the
    counterpart of `LoopHistogram` for the writes' counters (a write increments one or two). Exposed as
    the library's would be (`_total`; no `_created`)."""

    def child(self, *labels: str) -> Increment:
        cell = self.series.setdefault(labels, [0.0])

        def inc() -> None:
            cell[0] += 1

        return inc

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, cell in self.series.items():
            family.add_metric(list(labels), cell[0])
        yield family


def counter(name: str, documentation: str, labelnames: tuple[str, ...]) -> Callable[..., Increment]:
    """The increment function of a label set of a counter family (called with the label values)."""
    if multiprocess_mode():
        family = Counter(name, documentation, labelnames)
        return lambda *labels: family.labels(*labels).inc
    return LoopCounter(name, documentation, labelnames).child


def histogram(
    name: str, documentation: str, labelnames: tuple[str, ...], buckets: tuple[float, ...]
) -> Callable[..., Observe]:
    """The observe function of a label set of a histogram family (called with the label values)."""
    if multiprocess_mode():
        family = Histogram(name, documentation, labelnames, buckets=buckets)
        return lambda *labels: (family.labels(*labels) if labels else family).observe
    return LoopHistogram(name, documentation, labelnames, buckets).child


def multiprocess_mode() -> bool:
    """Whether this process writes its values to PROMETHEUS_MULTIPROC_DIR's files (decided by the
    environment at start-up, as prometheus-client decides it at import)."""
    return bool(os.environ.get(MULTIPROCESS_DIR))


REQUEST_DURATION = histogram(
    "http_server_request_duration_seconds",
    "Duration of HTTP server requests",
    ("http_request_method", "http_route", "http_response_status_code"),
    HTTP_BUCKETS,
)
ACTIVE_REQUESTS = Gauge(
    "http_server_active_requests", "HTTP server requests in progress", multiprocess_mode="livesum"
)
POOL_CONNECTIONS = Gauge(
    "db_client_connection_count",
    "Open database connections of the API's pools, by state (used, idle)",
    ("db_client_connection_state",),
    multiprocess_mode="livesum",
)
POOL_MAX = Gauge(
    "db_client_connection_max", "Most connections the API's pools may open", multiprocess_mode="livesum"
)
POOL_PENDING = Gauge(
    "db_client_connection_pending_requests",
    "Requests waiting for their turn at a database connection",
    multiprocess_mode="livesum",
)
POOL_WAIT = histogram(
    "db_client_connection_wait_time_seconds",
    "Time a request waited for its turn at a database connection",
    (),
    WAIT_BUCKETS,
)
IDEMPOTENCY = counter(
    "orders_idempotency_requests",
    "Writes sent with an Idempotency-Key, by outcome: created, replayed, reused, in_progress",
    ("outcome",),
)
TRANSITIONS = counter(
    "orders_state_transitions",
    "Order state changes made by the API, by from and to state",
    ("from_state", "to_state"),
)
RATE_LIMITED = counter(
    "orders_rate_limited_requests", "Requests refused with 429 rate_limited, by policy", ("policy",)
)

_wait = POOL_WAIT()


# Each labelled child is looked up once per label set (bounded: methods, route templates, statuses, outcomes,
# transitions): labels() validates its arguments and takes a lock on every call.
@functools.cache
def _duration(method: str, route: str, status: int) -> Observe:
    return REQUEST_DURATION(method if method in METHODS else "_OTHER", route, str(status))


@functools.cache
def _outcome(outcome: str) -> Increment:
    return IDEMPOTENCY(outcome)


@functools.cache
def _rate_limited(policy: str) -> Increment:
    return RATE_LIMITED(policy)


@functools.cache
def _transition(change: Transition) -> Increment:
    sources = "|".join(status for status in OrderStatus if status in change.sources)
    return TRANSITIONS(sources, change.target)


def observe_request(method: str, route: str | None, status: int, seconds: float) -> None:
    """One finished request, under its route template (never its raw path)."""
    _duration(method, route or UNKNOWN_ROUTE, status)(seconds)


def observe_pool_wait(seconds: float) -> None:
    if state.enabled:
        _wait(seconds)


def idempotency(outcome: str) -> None:
    if state.enabled:
        _outcome(outcome)()


def rate_limited(policy: str) -> None:
    """A request refused with 429 under `policy` (counted by the caller only when metrics are enabled)."""
    _rate_limited(policy)()


def transition(change: Transition) -> None:
    """An order changed state. A change allowed from several states (cancel) is counted under all of them
    (`draft|confirmed`): its guarded UPDATE does not say which one the order was in."""
    if state.enabled:
        _transition(change)()


class PoolUsage(NamedTuple):
    used: int
    idle: int
    max: int
    pending: int


def record_pool(usage: PoolUsage) -> None:
    """The pool's figures and the requests in progress, as they are now: at each scrape, and every second in
    each worker of several (whose values the scrape reads from their files)."""
    ACTIVE_REQUESTS.set(state.active)
    POOL_CONNECTIONS.labels("used").set(usage.used)
    POOL_CONNECTIONS.labels("idle").set(usage.idle)
    POOL_MAX.set(usage.max)
    POOL_PENDING.set(usage.pending)


class _Pooled(Protocol):
    def usage(self) -> PoolUsage: ...


def keep_pool_recorded(pool: _Pooled) -> "asyncio.Task[None] | None":
    """With several workers, each records its pool every second (a scrape reads them all from the files);
    a single process records it when scraped."""
    if not multiprocess_mode():
        return None

    async def record() -> None:
        while True:
            record_pool(pool.usage())
            await asyncio.sleep(1)

    return asyncio.create_task(record())


def process_exited() -> None:
    """A worker leaving: its live gauges stop counting (its counters stay in the totals)."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class OutboxBacklog(NamedTuple):
    pending: int
    dead: int
    oldest_age_seconds: float


class OutboxCollector(Collector):
    """The outbox gauges of one scrape, from a backlog read at most once a second."""

    def __init__(self, backlog: OutboxBacklog) -> None:
        self.backlog = backlog

    def collect(self) -> Iterable[GaugeMetricFamily]:
        backlog = self.backlog
        yield GaugeMetricFamily(
            "orders_outbox_pending_events", "Outbox events to publish (not dead)", backlog.pending
        )
        yield GaugeMetricFamily(
            "orders_outbox_dead_events", "Dead-lettered outbox events (see outbox retry-dead)", backlog.dead
        )
        yield GaugeMetricFamily(
            "orders_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending outbox event (0: none pending)",
            backlog.oldest_age_seconds,
        )


class BacklogCache:
    """The last backlog read and when: reads within OUTBOX_CACHE_SECONDS reuse it."""

    def __init__(self) -> None:
        self.value: OutboxBacklog | None = None
        self.read_at = 0.0

    def fresh(self) -> OutboxBacklog | None:
        if self.value is not None and time.monotonic() - self.read_at < OUTBOX_CACHE_SECONDS:
            return self.value
        return None

    def store(self, value: OutboxBacklog) -> OutboxBacklog:
        self.value, self.read_at = value, time.monotonic()
        return value


def exposition(backlog: OutboxBacklog | None) -> bytes:
    """The text of a scrape: this process's metrics (every worker's, in multiprocess mode) and the outbox."""
    if multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        text = generate_latest(registry)
    else:
        text = generate_latest(REGISTRY)
    if backlog is not None:
        outbox = CollectorRegistry(auto_describe=False)
        outbox.register(OutboxCollector(backlog))
        text += generate_latest(outbox)
    return text


# ------------------------------------------------------------------------------------------- the relay
# The relay process's own registry, served on `relay --metrics-port` (never by the API's /metrics).
RELAY = CollectorRegistry()
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10_000)
RELAY_PUBLISHED = Counter(
    "orders_relay_published_events",
    "Events the broker acknowledged, by subject",
    ("subject",),
    registry=RELAY,
)
RELAY_FAILURES = Counter(
    "orders_relay_publish_failures",
    "Failed publishes: refused (the event is charged an attempt) or unavailable (the broker is away)",
    ("reason",),
    registry=RELAY,
)
RELAY_DEAD = Counter(
    "orders_relay_dead_lettered_events", "Events dead-lettered after their last attempt", registry=RELAY
)
RELAY_BATCH = Histogram(
    "orders_relay_batch_size", "Events claimed per relay transaction", buckets=BATCH_BUCKETS, registry=RELAY
)
RELAY_LAG = Histogram(
    "orders_relay_lag_seconds",
    "From the event's commit (its created_at) to the broker's acknowledgement",
    buckets=LAG_BUCKETS,
    registry=RELAY,
)


async def serve_relay(host: str, port: int, health: Callable[[], tuple[bool, bytes]]) -> asyncio.Server:
    """A small HTTP/1.1 listener: GET /metrics (the relay's registry) and GET /healthz (`health()`)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, path, *_ = [*head.split(b" ", 2), b"", b""]
            path = path.split(b"?", 1)[0]
            if method not in (b"GET", b"HEAD"):
                status, kind, body = b"405 Method Not Allowed", b"text/plain", b"GET only\n"
            elif path == b"/metrics":
                status, kind, body = b"200 OK", CONTENT_TYPE_LATEST.encode(), generate_latest(RELAY)
            elif path == b"/healthz":
                ok, body = health()
                status, kind = (b"200 OK" if ok else b"503 Service Unavailable"), b"application/json"
            else:
                status, kind, body = b"404 Not Found", b"text/plain", b"/metrics or /healthz\n"
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\ncontent-type: "
                + kind
                + b"\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\nconnection: close\r\n\r\n"
                + (b"" if method == b"HEAD" else body)
            )
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port)
