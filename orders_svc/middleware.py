"""Request id, the request log line, and the last line of defence against unplanned errors."""

import logging
import os
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response
from .logs import log_request, request_id

log = logging.getLogger("orders_svc.request")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
# Every response is exactly the type it declares: no browser guesses a JSON error or a text file into HTML.
_NOSNIFF = (b"x-content-type-options", b"nosniff")


class RequestContext:
    """Accept or generate `X-Request-ID`, echo it (with `nosniff`), log one line per request, turn crashes
    into clean 500s."""

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

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            log.error("unhandled error", exc_info=exc)
            status = 500
            if not responded:  # nothing sent yet: answer in the error envelope, without internals
                await error_response(500, "internal error")(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            log_request(
                log,
                {
                    "method": scope["method"],
                    "route": getattr(route, "path", None),
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "tenant": scope.get("orders.tenant"),
                },
            )
            request_id.reset(token)


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _VALID_ID.match(text) else None
    return None
