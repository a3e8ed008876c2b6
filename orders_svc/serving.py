"""How `orders-svc serve` speaks HTTP: uvicorn's httptools protocol, with two changes.

One write per response. uvicorn writes a response's head when the app sends `http.response.start` and its
body when it sends `http.response.body`: two `send` system calls, two TCP segments (the socket has
TCP_NODELAY), two wake-ups of the client. Here the protocol writes through a transport that gathers the writes
made while one event-loop callback runs and hands them to the socket together as the loop moves on, before it
next polls. Under load that cut the service's CPU per request by 15-20 % (get by id 175 -> 141 us, a list page
233 -> 196 us) and spared the client a read per response. Nothing waits longer than the current callback.

Every error in the envelope. uvicorn answers some requests itself, in text/plain: a request its parser refuses
(400), a request still running when a shutdown's grace period ends or an app that returns without answering
(500), and one past `limit_concurrency` (503). Here they are `{code, message}` JSON like every other error.

This is the one module that reaches into uvicorn's internals: the httptools protocol class and what it calls
(`send_400_response`, `_start_asgi_task`, `server_state.default_headers`), the per-request
`RequestResponseCycle` and its `send_500_response`, and `flow_control.service_unavailable`. uvicorn is pinned
to one minor version for them, and tests/test_serving.py fails on an upgrade that moves any of them.
"""

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from . import errors

# `{code, message}` as the service's own error responses write it, from the catalogue.
BAD_REQUEST = errors.body_of(errors.MALFORMED_HTTP)
INTERNAL_ERROR = errors.body_of(errors.INTERNAL)
UNAVAILABLE = errors.body_of(errors.TOO_BUSY)


class CoalescingTransport:
    """Wraps a transport: writes made in one loop callback go out as one write, in order, soon after it."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()  # what was written before close() still goes out, as with the transport itself
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # everything else: the transport's own
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """`uvicorn.run(..., http=CoalescingHttpToolsProtocol)`: httptools parsing, one write per response, and
    uvicorn's own answers in the error envelope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # Duck-typed: every transport method the protocol uses is the real transport's, but for writing.
        super().connection_made(cast(asyncio.Transport, CoalescingTransport(transport, self.loop)))

    def send_400_response(self, msg: str) -> None:
        """What the parser refused (bad Content-Length or Transfer-Encoding, a bad chunk, bytes no header may
        hold): 400 in the envelope, then the connection is closed, as uvicorn does (`msg` is its log line)."""
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        head += [b"%s: %s\r\n" % header for header in self.server_state.default_headers]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(BAD_REQUEST))
        self.transport.write(b"".join([*head, b"connection: close\r\n\r\n", BAD_REQUEST]))
        self.transport.close()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # Every request, pipelined or not, passes here before its task starts. The cycle differs from
        # uvicorn's only in the 500 it sends; past limit_concurrency uvicorn hands over its 503 app instead.
        cycle.__class__ = EnvelopeCycle
        super()._start_asgi_task(cycle, unavailable if app is service_unavailable else app)


class EnvelopeCycle(RequestResponseCycle):
    """uvicorn's request/response cycle, answering its own 500 in the error envelope."""

    async def send_500_response(self) -> None:
        await _answer(self.send, 500, INTERNAL_ERROR)


async def unavailable(scope: Any, receive: Any, send: Any) -> None:
    """The app uvicorn runs instead of the service's past `limit_concurrency`."""
    await _answer(send, 503, UNAVAILABLE, (b"retry-after", b"1"))


async def _answer(send: Any, status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
    fixed = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*fixed, *headers, (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
