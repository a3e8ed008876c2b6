"""OpenTelemetry traces, with the `otel` extra and when the standard OTEL_* variables ask for them.

Off (the default) it costs an attribute read per request. On: a server span per request named after its
route template, carrying the request id and continuing an incoming W3C `traceparent`; a client span per SQL
statement (asyncpg's query logger, named after the statement's block in sql/), under a span of their batch
for statements run for several requests at once; and, for writes, the request's
traceparent stored with the outbox events it causes (the `orders.traceparent` session setting, which the
outbox column defaults to: migration 0010), which the relay sends on as the message's `traceparent` header
under a publish span of the same trace.
"""

import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from starlette.types import Scope

log = logging.getLogger("orders_svc")

READS = frozenset({"GET", "HEAD", "OPTIONS"})
SERVICE_NAME = "orders-svc"
# For a write in progress: the traceparent its outbox events get (db.py sets it on the connection).
outbox_trace: ContextVar[str | None] = ContextVar("outbox_trace", default=None)
_WORD = re.compile(r"[A-Za-z]+")


class _State:
    tracer: Any = None
    propagator: Any = None
    statements: dict[str, str] = {}  # noqa: RUF012 - SQL text -> block name, filled by install
    statements_by_name: dict[str, str] = {}  # noqa: RUF012


state = _State()


def wanted(env: Mapping[str, str]) -> bool:
    """Whether the OTEL_* variables ask for traces: an exporter named (not `none`) or an OTLP endpoint."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure(env: Mapping[str, str] | None = None) -> bool:
    """Install a tracer provider from the OTEL_* variables, if they ask for one; whether tracing is on."""
    env = os.environ if env is None else env
    if not wanted(env):
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        log.warning("OTEL_* variables are set but the otel extra is not installed: no traces")
        return False
    exporter: SpanExporter
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_*
    # The sampler comes from OTEL_TRACES_SAMPLER(_ARG), other attributes from OTEL_RESOURCE_ATTRIBUTES.
    provider = TracerProvider(
        resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or SERVICE_NAME})
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider)
    return True


def install(provider: Any) -> None:
    """Trace with this provider (tests give one with an in-memory exporter)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from ..resources import load_sql

    state.statements_by_name = load_sql()
    state.statements = {text: name for name, text in state.statements_by_name.items()}
    state.propagator = TraceContextTextMapPropagator()
    state.tracer = provider.get_tracer("orders_svc")


def uninstall() -> None:
    state.tracer = None


def traceparent(span: Any) -> str:
    """The W3C traceparent naming `span`."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _parent(carrier: dict[str, str]) -> Any:
    return state.propagator.extract(carrier) if carrier else None


def start_request(scope: Scope, request_id: str) -> Any:
    """The server span of a request, current until `end_request`; a write's traceparent for its events."""
    from opentelemetry import context, trace

    carrier = {}
    for name, value in scope["headers"]:
        if name in (b"traceparent", b"tracestate"):
            carrier[name.decode()] = value.decode("latin-1")
    method = scope["method"]
    span = state.tracer.start_span(
        method,
        context=_parent(carrier),
        kind=trace.SpanKind.SERVER,
        attributes={
            "http.request.method": method,
            "url.path": scope["path"],
            "orders.request_id": request_id,
        },
    )
    token = context.attach(trace.set_span_in_context(span))
    trace_token = outbox_trace.set(traceparent(span)) if method not in READS else None
    return span, token, trace_token


def end_request(handle: Any, method: str, route: str | None, status: int) -> None:
    from opentelemetry import context
    from opentelemetry.trace import StatusCode

    span, token, trace_token = handle
    if route is not None:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_attribute("error.type", str(status))
        span.set_status(StatusCode.ERROR)
    span.end()
    if trace_token is not None:
        outbox_trace.reset(trace_token)
    context.detach(token)


def current() -> Any:
    """The current span's context: a request's, to place it in the trace of a batch run for it elsewhere."""
    from opentelemetry import trace

    return trace.get_current_span().get_span_context()


@contextmanager
def batch(name: str, requests: list[Any]) -> Iterator[None]:
    """A span for statements run for several requests at once (db.Database.batched), current inside: a
    child of the first request's span (`current()` there), linked to the others'; the statements' spans are
    its children."""
    from opentelemetry import context, trace

    first, *others = requests
    span = state.tracer.start_span(
        name,
        context=trace.set_span_in_context(trace.NonRecordingSpan(first)),
        links=[trace.Link(other) for other in others],
        attributes={"orders.batch.size": len(requests)},
    )
    token = context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        context.detach(token)
        span.end()


def statement_name(query: str) -> str:
    """The sql/ block a statement comes from, else its first keyword (BEGIN, COMMIT, ...)."""
    name = state.statements.get(query)
    if name is not None:
        return name
    word = _WORD.search(query)
    return word.group(0).upper() if word else "SQL"


def sql_span(record: Any) -> None:
    """asyncpg query logger: a client span for a statement just run (called back in the caller's context)."""
    tracer = state.tracer
    if tracer is None:
        return
    from opentelemetry.trace import SpanKind, StatusCode

    end = time.time_ns()
    span = tracer.start_span(
        statement_name(record.query),
        kind=SpanKind.CLIENT,
        start_time=end - int(record.elapsed * 1e9),
        attributes={"db.system.name": "postgresql", "db.query.text": record.query},
    )
    if record.exception is not None:
        span.set_attribute("error.type", type(record.exception).__name__)
        span.set_status(StatusCode.ERROR)
    span.end(end_time=end)


def start_publish(subject: str, parent: str | None) -> Any:
    """The relay's producer span for one event, child of the request that wrote it (stored traceparent)."""
    from opentelemetry.trace import SpanKind

    return state.tracer.start_span(
        f"publish {subject}",
        context=_parent({"traceparent": parent} if parent else {}),
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "nats", "messaging.destination.name": subject},
    )


def end_publish(span: Any, error: BaseException | None) -> None:
    from opentelemetry.trace import StatusCode

    if error is not None:
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(StatusCode.ERROR)
    span.end()


async def mark_events(conn: Any, trace: str) -> None:
    """Name `trace` as the traceparent of the outbox events this session writes next."""
    await conn.execute(state.statements_by_name["set_outbox_traceparent"], trace)
