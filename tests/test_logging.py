"""One structured log line per request, carrying the request id, route, status, duration and tenant."""

import json
import logging

import pytest

from orders_svc.logs import JsonFormatter

from helpers import create


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
