"""One structured log line per request, carrying the request id, route, status, duration and tenant."""

import io
import json
import logging
import logging.handlers
import re
import time

import asyncpg
import pytest

from orders_svc import logs
from orders_svc.logs import BufferedStreamHandler, JsonFormatter

from conftest import test_settings as settings_for
from helpers import confirmed_id, create, tenant_headers
from support import app_client


@pytest.fixture
def request_log(caplog):
    caplog.set_level(logging.INFO, logger="orders_svc.request")
    return caplog


def _lines(caplog) -> list[dict]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == "orders_svc.request"]


async def test_each_request_logs_one_json_line_with_its_context(client, tenant, request_log):
    response = await create(client, tenant)
    (line,) = _lines(request_log)
    assert line["msg"] == "request"
    assert line["method"] == "POST"
    assert line["route"] == "/orders"
    assert line["status"] == 201
    assert line["tenant"] == tenant
    assert line["request_id"] == response.headers["x-request-id"]
    assert isinstance(line["duration_ms"], float)


async def test_a_sent_request_id_is_echoed_and_logged(client, tenant, request_log):
    response = await client.get("/orders", headers={"X-Tenant-Id": tenant, "X-Request-ID": "trace-123"})
    assert response.headers["x-request-id"] == "trace-123"
    (line,) = _lines(request_log)
    assert line["request_id"] == "trace-123"
    assert line["route"] == "/orders"


async def test_unknown_routes_are_logged_without_a_route_template(client, request_log):
    response = await client.get("/nope")
    assert response.status_code == 404
    (line,) = _lines(request_log)
    assert line["route"] is None
    assert line["path"] == "/nope"
    assert line["status"] == 404


async def test_every_line_of_a_failing_request_carries_its_request_id(fresh_database_url, caplog):
    """The error line of a 500 (with its traceback) as well as the request line, not only the latter."""
    tenant = "t-broken"
    async with app_client(settings_for(fresh_database_url)) as http:
        order_id = await confirmed_id(http, tenant)
        async with asyncpg.create_pool(fresh_database_url, min_size=1, max_size=1) as db:
            # A failure no client can cause (a missing table is a 503 schema_not_migrated instead).
            await db.execute("ALTER TABLE outbox ADD CONSTRAINT outbox_broken CHECK (false) NOT VALID")
        caplog.clear()
        caplog.set_level(logging.INFO)
        response = await http.post(
            f"/orders/{order_id}/close", headers={**tenant_headers(tenant), "X-Request-ID": "r-500-log"}
        )
    assert response.status_code == 500 and response.headers["x-request-id"] == "r-500-log"
    formatter = JsonFormatter()
    served = [record for record in caplog.records if not record.name.startswith("httpx")]  # the client's own
    lines = [json.loads(formatter.format(record)) for record in served]
    assert [(line["level"], line["msg"]) for line in lines] == [
        ("error", "unhandled error"),
        ("info", "request"),
    ]
    assert [line.get("request_id") for line in lines] == ["r-500-log", "r-500-log"]
    assert "outbox" in lines[0]["exc"] and lines[1]["status"] == 500


def _record(level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("orders_svc.request", level, __file__, 1, msg, None, None)


def test_info_lines_are_batched_and_written_by_the_flusher_within_its_interval():
    stream = io.StringIO()
    handler = BufferedStreamHandler(stream, interval=0.05)
    try:
        handler.handle(_record(logging.INFO, "one"))
        handler.handle(_record(logging.INFO, "two"))
        assert stream.getvalue() == ""  # not one write per request line
        deadline = time.monotonic() + 5
        while stream.getvalue() != "one\ntwo\n" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stream.getvalue() == "one\ntwo\n"
    finally:
        handler.close()


def test_a_warning_is_written_at_once_after_the_lines_before_it():
    stream = io.StringIO()
    handler = BufferedStreamHandler(stream, interval=60)
    try:
        handler.handle(_record(logging.INFO, "request"))
        handler.handle(_record(logging.WARNING, "database unavailable"))
        assert stream.getvalue() == "request\ndatabase unavailable\n"
    finally:
        handler.close()


def test_closing_the_handler_writes_what_is_pending():
    stream = io.StringIO()
    handler = BufferedStreamHandler(stream, interval=60)
    handler.handle(_record(logging.INFO, "last words"))
    handler.close()
    assert stream.getvalue() == "last words\n"


def test_a_full_buffer_is_written_without_waiting_for_the_interval():
    stream = io.StringIO()
    handler = BufferedStreamHandler(stream, interval=60, max_pending=10)
    try:
        for i in range(3):
            handler.handle(_record(logging.INFO, f"line-{i}"))
        assert stream.getvalue().startswith("line-0\nline-1\n")
    finally:
        handler.close()


def keyed(tenant: str, request_id: str) -> dict[str, str]:
    return tenant_headers(tenant, **{"Idempotency-Key": request_id, "X-Request-ID": request_id})


@pytest.fixture
def service_logging():
    """The service's own logging set-up (configure) on a StringIO; the root logger restored after."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logs._installed, logging.logThreads)
    stream = io.StringIO()
    logs.configure("INFO", "json", stream)
    try:
        yield stream, root.handlers[0]
    finally:
        root.handlers[0].close()
        root.handlers[:], level, logs._installed, logging.logThreads = saved
        root.setLevel(level)


async def test_request_lines_skip_the_log_record_when_only_the_json_handler_listens(
    client, tenant, service_logging
):
    """The direct path writes the line the logging path would: same fields, same order, same request id."""
    stream, handler = service_logging
    made: list[str] = []
    factory = logging.getLogRecordFactory()

    def counting(*args, **kwargs):
        record = factory(*args, **kwargs)
        made.append(record.name)
        return record

    root = logging.getLogger()
    pytest_handlers = root.handlers[:]  # pytest adds its capture handlers for the test's call phase
    root.handlers[:] = [handler]
    logging.setLogRecordFactory(counting)
    try:
        response = await client.post("/orders", headers=keyed(tenant, "direct-1"))
    finally:
        logging.setLogRecordFactory(factory)
        root.handlers[:] = pytest_handlers
    assert response.status_code == 201
    assert "orders_svc.request" not in made  # no LogRecord was built for the request line
    handler.flush()
    [direct] = [json.loads(line) for line in stream.getvalue().splitlines() if '"direct-1"' in line]

    fields = {k: direct[k] for k in ("method", "route", "path", "status", "duration_ms", "tenant")}
    record = logging.getLogger("orders_svc.request").makeRecord(
        "orders_svc.request", logging.INFO, __file__, 1, "request", None, None, extra=fields
    )
    record.request_id = "direct-1"
    via_logging = json.loads(handler.formatter.format(record))
    assert list(direct) == list(via_logging)
    assert {k: v for k, v in direct.items() if k != "ts"} == {
        k: v for k, v in via_logging.items() if k != "ts"
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", direct["ts"])
    assert direct["tenant"] == tenant and direct["status"] == 201 and direct["route"] == "/orders"


async def test_request_lines_go_through_logging_when_another_handler_listens(client, tenant, service_logging):
    stream, handler = service_logging
    extra = logging.handlers.BufferingHandler(100)
    logging.getLogger("orders_svc").addHandler(extra)
    try:
        response = await client.post("/orders", headers=keyed(tenant, "shared-1"))
    finally:
        logging.getLogger("orders_svc").removeHandler(extra)
    assert response.status_code == 201
    [record] = [r for r in extra.buffer if r.name == "orders_svc.request"]
    assert record.request_id == "shared-1" and record.status == 201
    handler.flush()
    assert sum('"shared-1"' in line for line in stream.getvalue().splitlines()) == 1  # and once on the stream


def test_uvicorns_terminal_colour_copy_of_a_message_is_left_out():
    record = logging.getLogger("uvicorn.error").makeRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        "Started",
        None,
        None,
        extra={"color_message": "\x1b[1mStarted"},
    )
    assert "color_message" not in json.loads(JsonFormatter().format(record))
