"""OpenTelemetry traces with the SDK's in-memory exporter: the server span and its SQL children, an incoming
traceparent continued, and one trace from the HTTP request through the outbox to the NATS message."""

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from catalogue import add_product
from nats_support import NatsServer, relay_until_published
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from orders_svc.observability import tracing

from conftest import free_port
from conftest import test_settings as settings_for
from helpers import close, confirmed_id, create_id, tenant_headers
from support import app_client

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
INCOMING = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.uninstall()


async def settled() -> None:
    """SQL spans are made by asyncpg's query logger, called back on the next turns of the loop."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_request_is_a_server_span_continuing_the_callers_trace_with_a_span_per_statement(
    spans, database_url, tenant
):
    async with app_client(settings_for(database_url)) as http:
        order_id = await create_id(http, tenant)
        spans.clear()
        response = await http.get(f"/orders/{order_id}", headers=tenant_headers(tenant, traceparent=INCOMING))
        await settled()
    assert response.status_code == 200
    finished = spans.get_finished_spans()
    [server] = [s for s in finished if s.kind == SpanKind.SERVER]
    assert server.name == "GET /orders/{order_id}"
    assert f"{server.context.trace_id:032x}" == TRACE_ID
    assert server.parent is not None and f"{server.parent.span_id:016x}" == PARENT_ID
    assert server.attributes["http.route"] == "/orders/{order_id}"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["orders.request_id"] == response.headers["x-request-id"]
    statements = [s for s in finished if s.kind == SpanKind.CLIENT]
    assert statements, "each SQL statement is a span"
    for span in statements:
        assert span.context.trace_id == server.context.trace_id
        assert span.parent is not None and span.parent.span_id == server.context.span_id
        assert span.attributes["db.system.name"] == "postgresql"
    assert "select_order" in {s.name for s in statements}  # named after its block in sql/


async def test_an_order_with_items_has_its_statement_in_its_trace_under_the_span_of_its_batch(
    spans, database_url, db, tenant
):
    """An order with items is placed by a runner, with the others waiting at the same time
    (db.Database.batched): its statement's span is in the request's trace, a child of the batch's span, itself
    a child of the server span of the batch's first request."""
    product = await add_product(db, tenant)
    async with app_client(settings_for(database_url)) as http:
        spans.clear()
        response = await http.post(
            "/orders",
            headers=tenant_headers(tenant, traceparent=INCOMING, **{"Idempotency-Key": uuid.uuid4().hex}),
            json={"items": [{"productId": product, "quantity": 1}]},
        )
        await settled()
    assert response.status_code == 201, response.text
    finished = spans.get_finished_spans()
    [server] = [s for s in finished if s.kind == SpanKind.SERVER]
    [batch] = [s for s in finished if s.name == "create_orders_with_items"]
    [statement] = [s for s in finished if s.name == "create_order_with_items"]
    assert f"{batch.context.trace_id:032x}" == f"{statement.context.trace_id:032x}" == TRACE_ID
    assert batch.parent is not None and batch.parent.span_id == server.context.span_id
    assert statement.parent is not None and statement.parent.span_id == batch.context.span_id
    assert batch.attributes["orders.batch.size"] == 1


async def test_without_an_incoming_traceparent_a_request_starts_a_trace(spans, database_url):
    async with app_client(settings_for(database_url)) as http:
        spans.clear()
        assert (await http.get("/nope")).status_code == 404
    [server] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert server.parent is None and server.name == "GET"  # no route: the method alone
    assert server.attributes["http.response.status_code"] == 404


async def test_one_trace_from_the_request_through_the_outbox_to_the_nats_message(
    spans, fresh_database_url, fresh_db, tenant, tmp_path: Path
):
    async with app_client(settings_for(fresh_database_url)) as http:
        order_id = await confirmed_id(http, tenant)
        spans.clear()
        closed = await close(http, tenant, order_id, traceparent=INCOMING)
    assert closed.status_code == 200
    [request] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    stored = await fresh_db.fetchval(
        "SELECT traceparent FROM outbox WHERE order_id = $1", uuid.UUID(order_id)
    )
    assert stored == f"00-{TRACE_ID}-{request.context.span_id:016x}-01"

    server = NatsServer(free_port(), tmp_path / "jetstream", tmp_path / "nats.log")
    server.start()
    try:
        ms = timedelta(milliseconds=1)
        settings = settings_for(fresh_database_url, relay_poll_interval=50 * ms)
        [message] = await relay_until_published(settings, fresh_database_url, fresh_db, server.url)
    finally:
        server.stop()
    [publish] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert publish.name == "publish orders.closed"
    assert f"{publish.context.trace_id:032x}" == TRACE_ID
    assert publish.parent is not None and publish.parent.span_id == request.context.span_id
    assert message.headers["traceparent"] == f"00-{TRACE_ID}-{publish.context.span_id:016x}-01"


async def test_untraced_writes_store_no_traceparent(fresh_client, fresh_db, tenant):
    order_id = await confirmed_id(fresh_client, tenant)
    assert (await close(fresh_client, tenant, order_id, traceparent=INCOMING)).status_code == 200
    assert await fresh_db.fetchval("SELECT traceparent FROM outbox") is None


@pytest.mark.parametrize(
    ("env", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_only_the_standard_otel_variables_turn_tracing_on(env, wanted):
    assert tracing.wanted(env) is wanted


def test_configure_installs_a_provider_only_when_asked():
    try:
        assert tracing.configure({}) is False and tracing.state.tracer is None
        assert tracing.configure({"OTEL_TRACES_EXPORTER": "console"}) is True
        assert tracing.state.tracer is not None
    finally:
        tracing.uninstall()
