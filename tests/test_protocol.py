"""The HTTP protocol `orders-svc serve` runs: uvicorn's httptools protocol writing each response at once."""

import asyncio
import json
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

from orders_svc.protocol import CoalescingTransport


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
