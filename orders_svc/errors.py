"""One error type and one renderer: every non-2xx is `{code, message, details?}`."""

import logging
from http import HTTPStatus
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from .schemas import Error

log = logging.getLogger("orders_svc")

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    428: "precondition_required",
    500: "internal_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """A client-visible failure: status, message and optional structured details."""

    def __init__(
        self,
        status: int,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
        self.headers = headers


def conflict(reason: str, message: str, **details: Any) -> ApiError:
    return ApiError(409, message, {"reason": reason, **details})


_encode = msgspec.json.Encoder().encode


def error_response(
    status: int,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    code = CODES.get(status) or HTTPStatus(status).phrase.lower().replace(" ", "_")
    body = _encode(Error(code=code, message=message, details=details))
    return Response(body, status, headers=headers, media_type="application/json")


async def api_error_handler(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.details, exc.headers)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (unknown route, wrong method) in our envelope."""
    assert isinstance(exc, HTTPException)
    message = {404: "no such route", 405: "method not allowed for this route"}.get(
        exc.status_code, HTTPStatus(exc.status_code).phrase
    )
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
    return error_response(exc.status_code, message, headers=headers)


def allowed_methods(request: Request) -> str:
    """Every method the path is served with: Starlette names only those of the first route matching it."""
    methods: set[str] = set()
    # Inside a Mount the scope's root_path has grown by the mount's prefix: match from the app's own root.
    root = request.scope.get("app_root_path", request.scope.get("root_path", ""))
    scope = {**request.scope, "root_path": root}
    for route in request.app.router.routes:
        if route.matches(scope)[0] is not Match.NONE:
            # A Route lists its methods; the one Mount serves the docs' static files, GET and HEAD.
            methods |= (route.methods if isinstance(route, Route) else None) or {"GET", "HEAD"}
    return ", ".join(sorted(methods))
