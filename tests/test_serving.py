"""The HTTP protocol `orders-svc serve` runs: uvicorn's httptools protocol writing each response at once and
answering its own errors in the envelope, tried over real sockets; and the uvicorn internals it relies on."""

import asyncio
import inspect
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httptools
import httpx
import psycopg
import pytest
import uvicorn
from uvicorn.protocols.http import flow_control, httptools_impl
from uvicorn.server import ServerState

from orders_svc.app import create_app
from orders_svc.serving import DEFAULT_LIMITS, CoalescingHttpToolsProtocol, CoalescingTransport, EnvelopeCycle

from conftest import test_settings as settings_for


class RecordingTransport:
    """Stands in for the socket's transport below the wrapper: records what reaches it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.events.append("close")
        self.closing = True

    def abort(self) -> None:
        self.events.append("abort")
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


async def test_writes_of_one_callback_reach_the_transport_as_one_write_in_order():
    below = RecordingTransport()
    transport = CoalescingTransport(below, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"{}")
    assert below.writes == []  # nothing yet: the callback writing the response is still running
    await asyncio.sleep(0)
    assert below.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    transport.writelines([b"a", b"b"])
    await asyncio.sleep(0)
    assert below.writes[1:] == [b"ab"]
    assert transport.get_extra_info("peername") == ("127.0.0.1", 1)


async def test_close_sends_what_was_written_first_and_abort_drops_it():
    below = RecordingTransport()
    transport = CoalescingTransport(below, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"last response")
    transport.close()
    assert (below.writes, below.events) == ([b"last response"], ["close"])
    await asyncio.sleep(0)  # the scheduled flush finds nothing left and a closing transport
    assert below.writes == [b"last response"]

    below = RecordingTransport()
    transport = CoalescingTransport(below, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"never sent")
    transport.abort()
    await asyncio.sleep(0)
    assert (below.writes, below.events) == ([], ["abort"])


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[str, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body from `sock` (bytes beyond it stay in `buffer`)."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-response"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    buffer[:] = rest[length:]
    return status, headers, rest[:length]


def _connect(base: str) -> socket.socket:
    address = urlsplit(base)
    sock = socket.create_connection((address.hostname, address.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def test_pipelined_requests_on_one_connection_are_answered_completely_and_in_order(live_server):
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    requests = [
        f"POST /orders HTTP/1.1\r\nHost: t\r\nX-Tenant-Id: {tenant}\r\nIdempotency-Key: {n}\r\n"
        "Content-Length: 2\r\n\r\n{}"
        for n in range(3)
    ] + [
        "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n",
        f"GET /orders HTTP/1.1\r\nHost: t\r\nX-Tenant-Id: {tenant}\r\n\r\n",
    ]
    with _connect(live_server) as sock:
        sock.sendall("".join(requests).encode())
        buffer = bytearray()
        answers = [_read_response(sock, buffer) for _ in requests]
    assert [status for status, _, _ in answers] == ["HTTP/1.1 201 Created"] * 3 + [
        "HTTP/1.1 404 Not Found",
        "HTTP/1.1 200 OK",
    ]
    created = [json.loads(body)["id"] for _, _, body in answers[:3]]
    assert [h["location"] for _, h, _ in answers[:3]] == [f"/orders/{i}" for i in created]
    assert json.loads(answers[3][2])["code"] == "not_found"
    assert [item["id"] for item in json.loads(answers[4][2])["items"]] == created[::-1]
    assert buffer == b""  # nothing beyond the five responses


def test_a_client_waiting_for_100_continue_gets_it_and_then_its_answer(live_server):
    """curl sends `Expect: 100-continue` for larger bodies and waits for the interim response."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    body = json.dumps({"tenantId": tenant}).ljust(2048).encode()
    head = (
        f"POST /orders HTTP/1.1\r\nHost: t\r\nX-Tenant-Id: {tenant}\r\nIdempotency-Key: big\r\n"
        f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with _connect(live_server) as sock:
        sock.sendall(head.encode())
        buffer = bytearray()
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)
        assert bytes(buffer).startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), bytes(buffer)
        del buffer[: len(b"HTTP/1.1 100 Continue\r\n\r\n")]
        sock.sendall(body)
        status, headers, answer = _read_response(sock, buffer)
    assert status == "HTTP/1.1 201 Created", answer
    assert json.loads(answer)["tenantId"] == tenant and headers["etag"] == '"1"'


# Requests uvicorn's parser refuses before the service sees them; a client library would not send them.
MALFORMED = {
    "content-length-not-a-number": b"POST /orders HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n{}",
    "content-length-twice": (
        b"POST /orders HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
    ),
    "unknown-transfer-coding": b"POST /orders HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, zip\r\n\r\n{}",
    "chunked-and-content-length": (
        b"POST /orders HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\n{}"
    ),
    "chunk-size-not-hex": (
        b"POST /orders HTTP/1.1\r\nHost: t\r\nX-Tenant-Id: t-bad-chunk\r\nIdempotency-Key: k\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
    ),
    "nul-in-a-header": b"GET /orders HTTP/1.1\r\nHost: t\r\nX-Tenant-Id: a\x00b\r\n\r\n",
    "space-in-a-header-name": b"GET /orders HTTP/1.1\r\nHost: t\r\nX Tenant: a\r\n\r\n",
    "not-http": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plain port
}


def _assert_envelope(answer: tuple[str, dict[str, str], bytes], status: str, code: str) -> dict[str, Any]:
    status_line, headers, body = answer
    assert status_line == status, (status_line, body)
    assert headers["content-type"] == "application/json", headers
    error = json.loads(body)
    assert set(error) == {"code", "message"} and error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    return headers


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_request_the_parser_refuses_gets_400_in_the_envelope_and_the_connection_closes(
    live_server, request_bytes
):
    with _connect(live_server) as sock:
        sock.sendall(request_bytes)
        buffer = bytearray()
        headers = _assert_envelope(_read_response(sock, buffer), "HTTP/1.1 400 Bad Request", "bad_request")
        assert headers["connection"] == "close" and "date" in headers
        assert buffer == b"" and sock.recv(1) == b""  # nothing more: the server closed the connection
    assert httpx.get(f"{live_server}/healthz").status_code == 200  # and serves on


@contextmanager
def uvicorn_serving(settings: Any, **options: Any) -> Iterator[tuple[uvicorn.Server, str]]:
    """The service's app under uvicorn with the service's protocol, in a thread, on a socket of its own."""
    listening = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(
        create_app(settings),
        http=CoalescingHttpToolsProtocol,
        loop="uvloop",
        log_config=None,
        access_log=False,
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    try:
        _poll(lambda: server.started or not thread.is_alive())
        assert server.started, "uvicorn did not start"
        yield server, f"http://127.0.0.1:{listening.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listening.close()
    assert not thread.is_alive()


# The service's sessions waiting on a lock (a row another session holds).
LOCK_WAITERS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND application_name = 'orders-svc' AND wait_event_type = 'Lock'"
)


def send_confirm(sock: socket.socket, tenant: str, order_id: str) -> None:
    """A confirm of a draft, as raw bytes: it waits for the order's row when another session holds it."""
    sock.sendall(
        f"PATCH /orders/{order_id}/confirm HTTP/1.1\r\nHost: t\r\nX-Tenant-Id: {tenant}\r\n"
        'If-Match: "1"\r\nContent-Length: 17\r\n\r\n{"totalCents": 5}'.encode()
    )


class Waiting(NamedTuple):
    server: uvicorn.Server
    base: str
    order_id: str
    sock: socket.socket  # the confirm's connection
    holder: psycopg.Connection[Any]  # the session holding the order's row: rollback() lets the confirm go on


@contextmanager
def confirm_on_a_locked_row(settings: Any, tenant: str, **options: Any) -> Iterator[Waiting]:
    """The service under uvicorn (`options`), a draft order of `tenant` whose row another session holds
    locked, and a confirm of it sent on a raw socket, seen waiting for that lock."""
    dsn = settings.database_url
    with (
        uvicorn_serving(settings, **options) as (server, base),
        psycopg.connect(dsn) as holder,
        psycopg.connect(dsn, autocommit=True) as observer,
    ):
        created = httpx.post(f"{base}/orders", headers={"X-Tenant-Id": tenant, "Idempotency-Key": "k"})
        order_id = created.json()["id"]
        holder.execute("SELECT 1 FROM orders WHERE id = %s FOR UPDATE", (order_id,))
        with _connect(base) as sock:
            send_confirm(sock, tenant, order_id)
            _poll(lambda: observer.execute(LOCK_WAITERS).fetchone() == (1,))
            assert observer.execute(LOCK_WAITERS).fetchone() == (1,), "the confirm never queued on the row"
            yield Waiting(server, base, order_id, sock, holder)
        holder.rollback()


def _poll(condition: Callable[[], object], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_past_the_concurrency_limit_a_request_gets_503_in_the_envelope_with_retry_after(database_url):
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    listing = f"GET /orders HTTP/1.1\r\nHost: t\r\nX-Tenant-Id: {tenant}\r\n\r\n".encode()
    with (
        uvicorn_serving(settings_for(database_url), limit_concurrency=2) as (_, base),
        _connect(base) as first,
    ):
        first.sendall(listing)  # answered: one connection open, under the limit
        assert _read_response(first, bytearray())[0] == "HTTP/1.1 200 OK"
        with _connect(base) as second:  # opened only now, so that the first request is surely under it
            second.sendall(listing)  # two connections open: at the limit
            answer = _read_response(second, bytearray())
    headers = _assert_envelope(answer, "HTTP/1.1 503 Service Unavailable", "service_unavailable")
    assert headers["retry-after"] == "1"


def test_a_request_still_running_when_shutdown_gives_up_on_it_gets_500_in_the_envelope(fresh_database_url):
    """A confirm waits on a row another session holds locked; the server stops with a short grace period."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    settings = settings_for(fresh_database_url, idempotency_wait_ms=60_000)
    with confirm_on_a_locked_row(settings, tenant, timeout_graceful_shutdown=0.2) as waiting:
        waiting.server.should_exit = True
        answer = _read_response(waiting.sock, bytearray())
        _assert_envelope(answer, "HTTP/1.1 500 Internal Server Error", "internal_error")


def test_the_uvicorn_internals_the_protocol_relies_on_are_still_there():
    """Fails on a uvicorn upgrade that renames, re-signs or bypasses what orders_svc.serving overrides,
    calls or reads. The round trips above show the behaviour; this names what moved."""
    protocol, cycle = httptools_impl.HttpToolsProtocol, httptools_impl.RequestResponseCycle
    overridden = {
        protocol.connection_made: ["self", "transport"],
        protocol.send_400_response: ["self", "msg"],
        protocol._start_asgi_task: ["self", "cycle", "app"],
        protocol.data_received: ["self", "data"],
        protocol.connection_lost: ["self", "exc"],
        protocol.on_message_begin: ["self"],
        protocol.on_url: ["self", "url"],
        protocol.on_header: ["self", "name", "value"],
        protocol.on_headers_complete: ["self"],
        protocol.on_message_complete: ["self"],
        protocol.__init__: ["self", "config", "server_state", "app_state", "_loop"],
        cycle.send_500_response: ["self"],
        cycle.receive: ["self"],
    }
    for method, parameters in overridden.items():
        assert list(inspect.signature(method).parameters) == parameters, method
    assert inspect.iscoroutinefunction(cycle.send_500_response)
    # Which app on_headers_complete hands over past limit_concurrency, and which cycle it builds.
    assert httptools_impl.service_unavailable is flow_control.service_unavailable
    source = inspect.getsource(protocol)
    assert "app = service_unavailable" in source and "self._start_asgi_task(" in source
    assert "self.send_400_response(" in source and "self.cycle = RequestResponseCycle(" in source
    assert "await self.send_500_response()" in inspect.getsource(cycle.run_asgi)
    # The limits: a parser callback's exception reaches send_400_response (httptools wraps it in a
    # HttpParserCallbackError), the cycle is built in on_headers_complete, and what the deadlines touch.
    assert issubclass(httptools.HttpParserCallbackError, httptools.HttpParserError)
    received = inspect.getsource(protocol.data_received)
    assert "except httptools.HttpParserError:" in received and "self.send_400_response(" in received
    assert "self.cycle = RequestResponseCycle(" in inspect.getsource(protocol.on_headers_complete)
    # The head's size and lines are read from what the parser callbacks store of it.
    assert "self.url += url" in inspect.getsource(protocol.on_url)
    assert "self.headers.append((name, value))" in inspect.getsource(protocol.on_header)
    begin = inspect.getsource(protocol.on_message_begin)
    assert 'self.url = b""' in begin and "self.headers = []" in begin
    assert "self.cycle.disconnected = True" in inspect.getsource(protocol.connection_lost)
    assert "await self.message_event.wait()" in inspect.getsource(cycle.receive)
    for attribute in ("disconnected", "keep_alive", "response_complete", "message_event", "more_body"):
        assert f"self.{attribute} = " in inspect.getsource(cycle.__init__), attribute
    assert inspect.iscoroutinefunction(cycle.receive)
    # The attributes the overrides read, on a protocol as uvicorn makes one.
    config = uvicorn.Config(create_app(settings_for("postgresql://unused")), http=CoalescingHttpToolsProtocol)
    made = CoalescingHttpToolsProtocol(config, ServerState(), {}, _loop=asyncio.new_event_loop())
    try:
        assert isinstance(made.server_state.default_headers, list) and made.loop is not None
        assert made.cycle is None and made.flow is None and made.limits == DEFAULT_LIMITS
        # The cycle is re-classed per request: a subclass without slots of its own, of a class without any.
        assert issubclass(EnvelopeCycle, cycle) and "__slots__" not in vars(cycle)
    finally:
        made.loop.close()
