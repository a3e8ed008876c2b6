"""What a client can send the running service over a socket: bytes that are not UTF-8, a request it abandons,
heads too large or too slow, bodies that stall, idle connections and too many of them. Every case is tried
against the real `orders-svc serve` (uvicorn, uvloop, httptools) over raw sockets, with its limits set
through the environment the way an operator sets them."""

import contextlib
import json
import select
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_serving import _assert_envelope, _connect, _read_response

from servers import serving

# Short deadlines so that the tests that wait for them are quick; the caps at their defaults.
LIMITS = {
    "ORDERS_HEAD_TIMEOUT_MS": "1000",
    "ORDERS_BODY_TIMEOUT_MS": "1000",
    "ORDERS_KEEPALIVE_TIMEOUT_SECONDS": "1",
    "ORDERS_MAX_CONCURRENCY": "40",
}
MAX_HEAD = 16 * 1024
TOO_LARGE = "HTTP/1.1 431 Request Header Fields Too Large"


class Server:
    def __init__(self, base: str, log_path: Path) -> None:
        self.base = base
        self.log_path = log_path

    def lines(self) -> list[dict[str, Any]]:
        text = self.log_path.read_text(errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def request_lines(self, rid: str, timeout: float = 15) -> list[dict[str, Any]]:
        """The log lines of request `rid`, once its request line is written (lines are batched)."""
        deadline = time.monotonic() + timeout
        while True:
            mine = [line for line in self.lines() if line.get("request_id") == rid]
            if any(line["msg"] == "request" for line in mine) or time.monotonic() > deadline:
                return mine
            time.sleep(0.05)


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log_path = tmp_path_factory.mktemp("edge") / "server.log"
    env = {**LIMITS, "ORDERS_LOG_LEVEL": "INFO", "ORDERS_LOG_FORMAT": "json"}
    with serving(database_url, log_path, **env) as base:
        yield Server(base, log_path)


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def _closed(sock: socket.socket) -> bool:
    """Whether the server closes the connection (rather than the 10 s socket timeout passing)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _answer_and_close(sock: socket.socket, status: str, code: str) -> dict[str, str]:
    buffer = bytearray()
    headers = _assert_envelope(_read_response(sock, buffer), status, code)
    assert headers["connection"] == "close"
    assert buffer == b"" and _closed(sock)
    return headers


# ------------------------------------------------------------------------------ 1. bytes that are not UTF-8
def test_invalid_utf8_inside_a_json_body_is_400_on_every_write(server):
    tenant = _tenant()
    body = b'{"tenantId":"\xff", "totalCents": 5, "reason": "\xc3\x28"}'
    with httpx.Client(base_url=server.base, headers={"X-Tenant-Id": tenant}) as http:
        created = http.post("/orders", headers={"Idempotency-Key": "seed"})
        order_id = created.json()["id"]
        sent = {
            "create": http.post("/orders", headers={"Idempotency-Key": "k"}, content=body),
            "confirm": http.patch(f"/orders/{order_id}/confirm", headers={"If-Match": '"1"'}, content=body),
            "close": http.post(f"/orders/{order_id}/close", content=body),
            "cancel": http.post(f"/orders/{order_id}/cancel", content=body),
        }
        for name, response in sent.items():
            assert response.status_code == 400, (name, response.text)
            assert response.json()["code"] == "bad_request", name
        assert http.get(f"/orders/{order_id}").json()["version"] == 1  # nothing changed


# ------------------------------------------------------------------------------ 2. a client that goes away
def test_a_client_that_disconnects_mid_body_is_logged_once_quietly_as_499(server):
    rid = f"gone-{uuid.uuid4().hex}"
    with _connect(server.base) as sock:
        sock.sendall(
            f"POST /orders HTTP/1.1\r\nHost: t\r\nX-Tenant-Id: {_tenant()}\r\nIdempotency-Key: k\r\n"
            f'X-Request-ID: {rid}\r\nContent-Length: 100\r\n\r\n{{"tenan'.encode()
        )
        time.sleep(0.2)  # the request is under way, reading its body
    lines = server.request_lines(rid)
    assert [(line["level"], line["msg"], line["status"]) for line in lines] == [("info", "request", 499)]
    assert "exc" not in lines[0]
    assert not [line for line in server.lines() if line["level"] == "error"]


# ------------------------------------------------------------------------------ 3. limits at the edge
def test_a_head_over_16_kib_is_431_in_the_envelope_and_the_connection_closes(server):
    with _connect(server.base) as sock:
        sock.sendall(b"GET /orders HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * MAX_HEAD + b"\r\n\r\n")
        _answer_and_close(
            sock, "HTTP/1.1 431 Request Header Fields Too Large", "request_header_fields_too_large"
        )


def test_an_if_match_list_past_the_head_cap_is_431(server):
    members = ", ".join(f'"{n}"' for n in range(4000))  # ~30 KiB
    with _connect(server.base) as sock:
        sock.sendall(
            f"PATCH /orders/{uuid.uuid4()}/confirm HTTP/1.1\r\nHost: t\r\nX-Tenant-Id: a\r\n"
            f"If-Match: {members}\r\nContent-Length: 2\r\n\r\n{{}}".encode()
        )
        _answer_and_close(
            sock, "HTTP/1.1 431 Request Header Fields Too Large", "request_header_fields_too_large"
        )


def test_more_than_100_headers_is_431(server):
    headers = "".join(f"X-H{n}: v\r\n" for n in range(101))
    with _connect(server.base) as sock:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: t\r\n{headers}\r\n".encode())
        _answer_and_close(
            sock, "HTTP/1.1 431 Request Header Fields Too Large", "request_header_fields_too_large"
        )
    headers = "".join(f"X-H{n}: v\r\n" for n in range(98))  # with Host: 99 lines, under the cap
    with _connect(server.base) as sock:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: t\r\n{headers}\r\n".encode())
        assert _read_response(sock, bytearray())[0] == "HTTP/1.1 200 OK"


def test_a_head_arriving_over_several_reads_is_held_to_the_same_caps(server):
    """Counted from what the parser handed over, whichever reads the head came in: 101 lines sent a few at
    a time are 431, as is a head past the size cap sent in small pieces; 99 lines so sent are served."""
    for lines, size in ((101, 1), (3, MAX_HEAD // 2 + 1), (99, 1)):
        head = b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + b"".join(
            b"X-H%d: %s\r\n" % (n, b"v" * size) for n in range(lines - 1)
        )
        pieces = [head[start : start + 700] for start in range(0, len(head), 700)] + [b"\r\n"]
        with _connect(server.base) as sock:
            for piece in pieces:  # a few at a time, until the service answers
                if select.select([sock], [], [], 0.005)[0]:
                    break
                sock.sendall(piece)
            if lines > 100 or size > 1:
                _answer_and_close(
                    sock, "HTTP/1.1 431 Request Header Fields Too Large", "request_header_fields_too_large"
                )
            else:
                assert _read_response(sock, bytearray())[0] == "HTTP/1.1 200 OK"


def test_an_unfinished_header_is_refused_long_before_it_is_all_buffered(server):
    """A header line that never ends: answered 431 once the head passes the cap, not buffered to 2 MiB."""
    with _connect(server.base) as sock:
        sock.sendall(b"GET /orders HTTP/1.1\r\nHost: t\r\nX-Endless: ")
        sent = 0
        while sent < 2 * 1024 * 1024:
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                break
            sock.sendall(b"b" * 4096)
            sent += 4096
        assert sent < 1024 * 1024, "still reading the header after 1 MiB"
        _answer_and_close(
            sock, "HTTP/1.1 431 Request Header Fields Too Large", "request_header_fields_too_large"
        )


def test_a_head_that_does_not_arrive_in_time_is_408_and_the_connection_closes(server):
    with _connect(server.base) as sock:
        sock.sendall(b"GET /orders HTTP/1.1\r\nHost: t\r\n")  # and nothing more
        _answer_and_close(sock, "HTTP/1.1 408 Request Timeout", "request_timeout")


def test_a_head_trickling_a_byte_at_a_time_is_cut_off_at_the_deadline(server):
    head = f"GET /orders HTTP/1.1\r\nHost: t\r\nX-Tenant-Id: {_tenant()}\r\n" + "X-Pad: x\r\n" * 20 + "\r\n"
    with _connect(server.base) as sock:
        sent = 0
        for byte in head.encode():
            if select.select([sock], [], [], 0.1)[0]:
                break
            sock.sendall(bytes([byte]))
            sent += 1
        assert sent < len(head), "the whole head was taken"
        _answer_and_close(sock, "HTTP/1.1 408 Request Timeout", "request_timeout")


def test_a_body_that_stalls_is_408_and_the_connection_closes(server):
    with _connect(server.base) as sock:
        sock.sendall(
            f"POST /orders HTTP/1.1\r\nHost: t\r\nX-Tenant-Id: {_tenant()}\r\nIdempotency-Key: k\r\n"
            "Content-Length: 50\r\n\r\n{".encode()
        )
        _answer_and_close(sock, "HTTP/1.1 408 Request Timeout", "request_timeout")


def test_on_a_kept_alive_connection_each_request_has_its_own_deadline(server):
    """The connection's first deadline passes while its second request's body is still arriving within its
    own: that request is answered; the third, whose body stalls, gets 408 at its own deadline."""
    tenant = _tenant()
    with _connect(server.base) as sock:
        buffer = bytearray()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _read_response(sock, buffer)[0] == "HTTP/1.1 200 OK"
        time.sleep(0.6)  # under the keep-alive timeout (1 s)
        head = f"POST /orders HTTP/1.1\r\nHost: t\r\nX-Tenant-Id: {tenant}\r\nContent-Length: 2\r\n"
        sock.sendall(f"{head}Idempotency-Key: a\r\n\r\n{{".encode())
        time.sleep(0.55)  # past the head deadline the connection opened with, within this body's
        sock.sendall(b"}")
        assert _read_response(sock, buffer)[0] == "HTTP/1.1 201 Created"
        sock.sendall(f"{head}Idempotency-Key: b\r\n\r\n{{".encode())
        _answer_and_close(sock, "HTTP/1.1 408 Request Timeout", "request_timeout")


def test_a_body_still_trickling_after_its_answer_does_not_keep_the_connection(server):
    with _connect(server.base) as sock:
        sock.sendall(
            f"GET /orders HTTP/1.1\r\nHost: t\r\nX-Tenant-Id: {_tenant()}\r\n"
            "Content-Length: 1000\r\n\r\nx".encode()
        )
        assert _read_response(sock, bytearray())[0] == "HTTP/1.1 200 OK"
        for _ in range(100):  # a byte every 50 ms: never idle long enough for the keep-alive timeout
            if select.select([sock], [], [], 0.05)[0]:
                break
            sock.sendall(b"x")
        assert _closed(sock)


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(server):
    with _connect(server.base) as sock:
        assert sock.recv(1) == b""


def test_an_idle_keep_alive_connection_is_closed(server):
    with _connect(server.base) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        buffer = bytearray()
        status, headers, _ = _read_response(sock, buffer)
        assert status == "HTTP/1.1 200 OK" and "connection" not in headers
        assert _closed(sock)


def test_past_the_concurrency_cap_a_request_gets_503_with_retry_after_not_a_wait(server):
    held: list[socket.socket] = []
    try:
        for _ in range(int(LIMITS["ORDERS_MAX_CONCURRENCY"])):
            sock = _connect(server.base)
            held.append(sock)
            sock.sendall(b"GET /orders HTTP/1.1\r\n")  # a head under way
        with _connect(server.base) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            answer = _read_response(sock, bytearray())
        headers = _assert_envelope(answer, "HTTP/1.1 503 Service Unavailable", "service_unavailable")
        assert headers["retry-after"] == "1"
    finally:
        for sock in held:
            sock.close()


# ------------------------------------------------------------------------------ fuzzing the socket
METHODS = [b"GET", b"POST", b"PATCH", b"HEAD", b"PUT", b"DELETE", b"OPTIONS"]
PATHS = [b"/orders", b"/orders/{id}", b"/orders/{id}/confirm", b"/orders/{id}/close", b"/orders/{id}/cancel"]
PATHS += [b"/healthz", b"/readyz", b"/openapi.json", b"/docs", b"/docs/static/swagger-ui.css"]
HEADER_NAMES = [
    b"X-Tenant-Id",
    b"Idempotency-Key",
    b"If-Match",
    b"Content-Type",
    b"Authorization",
    b"X-Request-ID",
    b"Transfer-Encoding",
    b"Content-Length",
    b"Expect",
    b"Connection",
]
FUZZ_TENANT = f"fz-{uuid.uuid4().hex[:8]}"


def _request_bytes() -> Any:
    from hypothesis import strategies as st

    text = st.binary(max_size=40) | st.sampled_from(
        [b"", b"*", b'"1"', b"1", b"chunked", b"100-continue", b"close", b"Bearer x.y.z", b"\xff\xfe", b"0"]
    )
    body = st.binary(max_size=120) | st.sampled_from(
        [b"{}", b'{"totalCents": 5}', b'{"tenantId":"\xff"}', b'{"reason": "\xc3\x28"}', b"[]", b"null"]
    )
    name = st.sampled_from(HEADER_NAMES) | st.binary(min_size=1, max_size=12)
    return st.builds(
        _assemble,
        st.sampled_from(METHODS) | st.binary(min_size=1, max_size=8),
        st.sampled_from(PATHS),
        st.binary(max_size=12),
        st.lists(st.tuples(name, text), max_size=6),
        body,
        st.sampled_from(["exact", "none", "short", "long"]),
        st.lists(st.tuples(st.integers(0, 400), st.binary(min_size=1, max_size=3)), max_size=3),
    )


def _assemble(method, path, suffix, headers, body, length, mutations) -> bytes:  # type: ignore[no-untyped-def]
    target = path.replace(b"{id}", str(uuid.uuid4()).encode()) + suffix
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: t", b"X-Tenant-Id: " + FUZZ_TENANT.encode()]
    lines += [name + b": " + value for name, value in headers]
    declared = {"exact": len(body), "short": max(len(body) - 1, 0), "long": len(body) + 5}.get(length)
    if declared is not None:
        lines.append(b"Content-Length: %d" % declared)
    data = bytearray(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    for at, replacement in mutations:  # a few bytes anywhere overwritten
        at %= len(data)
        data[at : at + len(replacement)] = replacement
    return bytes(data)


def _first_answer(sock: socket.socket, head_only: bool) -> tuple[str, dict[str, str], bytes] | None:
    """The server's first response to what was sent (interim 100s skipped); None if it closed without one.
    The answer to a HEAD request has no body, whatever its Content-Length says."""
    buffer = bytearray()
    while True:
        while b"\r\n\r\n" not in buffer:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                assert not buffer, bytes(buffer)
                return None
            buffer += chunk
        if bytes(buffer).startswith(b"HTTP/1.1 100 "):
            del buffer[: buffer.index(b"\r\n\r\n") + 4]
            continue
        if head_only:
            status, _, _ = bytes(buffer).partition(b"\r\n")
            return status.decode("latin-1"), {}, b""
        return _read_response(sock, buffer)


def test_fuzzed_bytes_on_the_socket_get_no_5xx_and_only_json_errors(server):
    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(_request_bytes())
    def check(request: bytes) -> None:
        with _connect(server.base) as sock:
            # Refused before it was all sent: the answer is still read.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(request)
            answer = _first_answer(sock, head_only=request.startswith(b"HEAD "))
        if answer is None:
            return
        status_line, headers, body = answer
        status = int(status_line.split()[1])
        assert status < 500, (request, answer)
        if status >= 400 and not request.startswith(b"HEAD "):
            assert headers["content-type"] == "application/json", (request, answer)
            error = json.loads(body)
            assert isinstance(error["code"], str) and isinstance(error["message"], str), (request, answer)

    check()
    assert not [line for line in server.lines() if line["level"] == "error"]
