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

Limits at the edge. httptools buffers whatever a request head holds, and uvicorn times out only an idle
keep-alive connection. Here (`Limits`, from the settings) a head larger than `max_head_bytes` or with more
than `max_headers` lines is refused with 431 as soon as it is seen (at the end of each read while it is
incomplete, and once it is), before it is all buffered; a head must
arrive within `head_timeout` (counted from its first byte, or from the connection's opening), and a body
within `body_timeout` of its head, else 408 and the connection is closed (a connection that sent nothing
is closed without an answer, as an idle keep-alive one is). Past `limit_concurrency` connections or
requests, uvicorn hands requests to its 503 app, answered here in the envelope with Retry-After.

Clients gone. A request task sees, through `db.client_gone`, whether its client has closed the connection,
so the database layer drops it before it takes a connection.

This is the one module that reaches into uvicorn's internals: the httptools protocol class, its parser
callbacks (`on_message_begin`, `on_headers_complete`, `on_message_complete`) and what `on_url` and
`on_header` store of the head (`url`, `headers`),
`data_received`, `connection_lost` and what it calls (`send_400_response`, `_start_asgi_task`,
`server_state.default_headers`, `self.cycle`, `self.flow`), the per-request `RequestResponseCycle` (its
`receive`, `send_500_response`, `disconnected`, `keep_alive`, `response_complete`, `message_event`) and
`flow_control.service_unavailable`. uvicorn is pinned to one minor version for them, and
tests/test_serving.py fails on an upgrade that moves any of them.
"""

import asyncio
import functools
import http
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from . import db, errors
from .settings import Settings

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


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may take of a connection (see the module's documentation)."""

    max_head_bytes: int
    max_headers: int
    head_timeout: float  # seconds
    body_timeout: float

    @classmethod
    def of(cls, settings: Settings) -> "Limits":
        return cls(
            settings.max_head_bytes,
            settings.max_headers,
            settings.head_timeout_ms / 1000,
            settings.body_timeout_ms / 1000,
        )


DEFAULT_LIMITS = Limits.of(Settings())
# A timer may run a little before its time (the loop's clock resolution): a deadline that close is due.
_TIMER_SLACK = 0.001


def http_protocol(settings: Settings) -> Any:
    """For `uvicorn.run(..., http=...)`: the protocol with the settings' limits (picklable, for workers)."""
    return functools.partial(CoalescingHttpToolsProtocol, limits=Limits.of(settings))


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request already answered."""


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """`uvicorn.run(..., http=http_protocol(settings))`: httptools parsing, one write per response, limits on
    what a request may take, and uvicorn's own answers in the error envelope."""

    def __init__(self, *args: Any, limits: Limits = DEFAULT_LIMITS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._expiry: tuple[float, Callable[[], None]] | None = None  # the deadline now running, if any
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._in_head = True  # from a message's first byte (or the connection's opening) to its head's end
        self._raw_bytes = 0  # bytes received while that head is incomplete (bounds what httptools buffers)
        self._begun = False  # a message began in the data being fed
        self._fed = 0  # the size of the data being fed
        self._received = False  # any byte since the connection opened

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # Duck-typed: every transport method the protocol uses is the real transport's, but for writing.
        super().connection_made(cast(asyncio.Transport, CoalescingTransport(transport, self.loop)))
        self._arm(self.limits.head_timeout, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._received = True
        self._begun = False
        self._fed = len(data)
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            # What httptools holds of an unfinished head (a header line still arriving) is not seen by the
            # callbacks: count what arrived since it began. Counted from the data after the one it began in,
            # so a pipelined body before it is not taken for head; at worst one read goes uncounted.
            self._raw_bytes = self._head_size() if self._begun else self._raw_bytes + len(data)
            if self._raw_bytes > self.limits.max_head_bytes:  # its lines are counted once it is complete
                self._refuse_head()

    # Parser callbacks: the size and count of the head, the deadlines of head and body.
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._begun = True, True
        self._raw_bytes = 0
        if self._expiry is None:
            self._arm(self.limits.head_timeout, self._head_expired)

    def _head_size(self) -> int:
        """The head as the parser has handed it over: the request target and each header line (name,
        ": ", value, CRLF; a value's trailing whitespace, which the parser drops, aside)."""
        headers = self.headers
        return len(self.url) + sum(len(name) + len(value) for name, value in headers) + 4 * len(headers)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        # A head that began in the data being fed is no larger than that data: measured only when larger.
        limits = self.limits
        if len(self.headers) > limits.max_headers or (
            (not self._begun or self._fed > limits.max_head_bytes)
            and self._head_size() > limits.max_head_bytes
        ):
            self._too_large()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # a request starts (not an upgrade)
            cycle.__class__ = EnvelopeCycle
            expired = functools.partial(self._body_expired, cast(EnvelopeCycle, cycle))
            self._arm(self.limits.body_timeout, expired)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _too_large(self) -> None:
        self._refuse_head()
        raise _Refused  # stops the parser (uvicorn then calls send_400_response: see there)

    def _refuse_head(self) -> None:
        self._in_head = False
        limits = self.limits
        body = errors.body_of(errors.HEAD_TOO_LARGE, limit=limits.max_head_bytes, count=limits.max_headers)
        self._refuse(431, body)

    # Deadlines: one at a time per connection (a head, then its body, then the next head). Arming and
    # disarming only note the deadline; the connection's one timer wakes at the earliest deadline noted and,
    # when the deadline running then is a later one (the request it was set for has moved on), sleeps again
    # until that one. A request that keeps its deadlines costs no timer of its own.
    def _arm(self, seconds: float, expired: Callable[[], None]) -> None:
        at = self.loop.time() + seconds
        self._expiry = (at, expired)
        if self._timer is None or self._timer_at > at:
            self._schedule(at)

    def _disarm(self) -> None:
        self._expiry = None

    def _schedule(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self.loop.call_at(at, self._wake)

    def _wake(self) -> None:
        self._timer = None
        if self._expiry is None:
            return
        at, expired = self._expiry
        if self.loop.time() >= at - _TIMER_SLACK:
            expired()
        else:
            self._schedule(at)

    def _head_expired(self) -> None:
        self._expiry = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head stalls behind a request still being answered: that answer is the last.
            self.cycle.keep_alive = False
            self.flow.pause_reading()
        elif self._received:
            seconds = _seconds(self.limits.head_timeout)
            self._refuse(408, errors.body_of(errors.REQUEST_TIMEOUT, part="head", seconds=seconds))
        else:  # not a byte since the connection opened: closed without an answer, as an idle one
            self.transport.close()

    def _body_expired(self, cycle: "EnvelopeCycle") -> None:
        self._expiry = None
        if cycle.response_complete:  # answered already, the body still trickling: nothing left to say
            self.transport.close()
            return
        # The request's task answers 408 from its next (or current) read of the body, then the connection
        # closes; what it has not read is not read any more.
        cycle.timed_out = _seconds(self.limits.body_timeout)
        cycle.keep_alive = False
        cycle.message_event.set()

    def send_400_response(self, msg: str) -> None:
        """What the parser refused (bad Content-Length or Transfer-Encoding, a bad chunk, bytes no header may
        hold): 400 in the envelope, then the connection is closed, as uvicorn does (`msg` is its log line).
        A request refused by a limit from a parser callback was answered already."""
        if not self.transport.is_closing():
            self._refuse(400, BAD_REQUEST)

    def _refuse(self, status: int, body: bytes) -> None:
        """Answer on the connection itself, no request task involved, and close it."""
        self._disarm()
        head = [b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode())]
        head += [b"%s: %s\r\n" % header for header in self.server_state.default_headers]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        self.transport.write(b"".join([*head, b"connection: close\r\n\r\n", body]))
        self.transport.close()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # Every request, pipelined or not, passes here before its task starts. The cycle differs from
        # uvicorn's in the 500 it sends and its body deadline; past limit_concurrency uvicorn hands over its
        # 503 app instead. The task is created in a context where the database layer sees its client.
        cycle.__class__ = EnvelopeCycle
        token = db.client_gone.set(cast(EnvelopeCycle, cycle).gone)
        try:
            super()._start_asgi_task(cycle, unavailable if app is service_unavailable else app)
        finally:
            db.client_gone.reset(token)


def _seconds(value: float) -> str:
    return f"{value:g}"


class EnvelopeCycle(RequestResponseCycle):
    """uvicorn's request/response cycle, answering its own 500 in the error envelope, and 408 to a read of
    a body that did not arrive in time."""

    timed_out: str | None = None  # the body deadline, in seconds, once it has passed

    def gone(self) -> bool:
        return self.disconnected

    async def receive(self) -> Any:
        if self.timed_out is None:
            message = await super().receive()
            if self.timed_out is None or message["type"] == "http.disconnect":
                return message
        raise errors.REQUEST_TIMEOUT.error(part="body", seconds=self.timed_out)

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
