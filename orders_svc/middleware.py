"""Request id, the request log line, and the last line of defence against unplanned errors."""

import logging
import os
import re
import time
from collections.abc import Hashable

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .db import contended, writing
from .errors import error_response
from .logs import log_request, request_id
from .observability import metrics, tracing
from .observability.limits import SCOPE_KEY as RATE_LIMIT_FIELDS

log = logging.getLogger("orders_svc.request")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
# nginx's status for "the client closed the connection before the response": logged, never sent.
CLIENT_CLOSED = 499
# Every response is exactly the type it declares: no browser guesses a JSON error or a text file into HTML.
_NOSNIFF = (b"x-content-type-options", b"nosniff")


class RequestContext:
    """Accept or generate `X-Request-ID`, echo it (with `nosniff`), log one line per request, turn crashes
    into clean 500s.

    A client that goes away before its answer is not an error of the service: its request ends quietly,
    logged once, with status 499. A write says so, for the database layer to give it a writer's turn, and
    names what it contends on (see `contention`), to queue it behind others on the same row or key. Each
    request is measured (metrics, under its route template), traced when tracing is configured, and given its
    tenant's RateLimit fields.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming_id(scope) or os.urandom(16).hex()  # as random as uuid4().hex, cheaper
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500
        responded = False
        added = [(b"x-request-id", rid.encode()), _NOSNIFF]
        if scope["method"] in _READS:
            contending = write = None
        else:
            contending, write = contended.set(contention(scope)), writing.set(True)
        measured = metrics.state.enabled
        if measured:
            metrics.state.active += 1
        span = tracing.start_request(scope, rid) if tracing.state.tracer is not None else None

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                message["headers"] = [*message.get("headers", []), *added, *scope.get(RATE_LIMIT_FIELDS, ())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            status = CLIENT_CLOSED
        except Exception as exc:
            log.error("unhandled error", exc_info=exc)
            status = 500
            if not responded:  # nothing sent yet: answer in the error envelope, without internals
                await error_response(500, "internal error")(scope, receive, send_with_id)
        finally:
            template = getattr(scope.get("route"), "path", None)
            duration = time.perf_counter() - started
            log_request(
                log,
                {
                    "method": scope["method"],
                    "route": template,
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(duration * 1000, 3),
                    "tenant": scope.get("orders.tenant"),
                },
            )
            if measured:
                metrics.state.active -= 1
                metrics.observe_request(scope["method"], template, status, duration)
            if span is not None:
                tracing.end_request(span, scope["method"], template, status)
            request_id.reset(token)
            if contending is not None:
                contended.reset(contending)
            if write is not None:
                writing.reset(write)


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _VALID_ID.match(text) else None
    return None


def contention(scope: Scope) -> Hashable | None:
    """What a write contends on: the resource its path names below a collection (`/orders/{id}/...`: that
    order's row), else its Idempotency-Key for the caller's identity (a create), else nothing."""
    parts = scope["path"].split("/", 3)
    if len(parts) > 2 and parts[2]:
        return ("resource", parts[1], parts[2])
    key = identity = None
    for name, value in scope["headers"]:
        if name == b"idempotency-key":
            key = value
        elif name in (b"x-tenant-id", b"authorization"):
            identity = (identity or b"") + b"\n" + value
    return None if key is None else ("key", scope["path"], identity, key)
