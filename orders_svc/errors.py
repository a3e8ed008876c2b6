"""The error catalogue: every error the service answers, declared once and raised by name.

Every non-2xx body is `{code, message, details?}`: `code` is one per status, a sub-case is `details.reason`.
A `Problem` is one entry (status, reason, message template); `raise Problem.error(**fields)` raises it. The
OpenAPI document lists each operation's problems from these same entries, and database constraint names map
to them in `BY_CONSTRAINT`, below.
"""

import logging
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .schemas import Error

log = logging.getLogger("orders_svc")

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    428: "precondition_required",
    429: "rate_limited",
    431: "request_header_fields_too_large",
    500: "internal_error",
    503: "service_unavailable",
}

RETRY_SOON = {"Retry-After": "1"}
CHALLENGE = {"WWW-Authenticate": "Bearer"}
# Standard Webhooks defines no HTTP authentication scheme; a 401 must still name one (RFC 9110 11.6.1):
# this one names the signature the provider's deliveries carry (docs/payments.md).
WEBHOOK_CHALLENGE = {"WWW-Authenticate": 'StandardWebhooks realm="payments"'}


def code_of(status: int) -> str:
    return CODES.get(status) or HTTPStatus(status).phrase.lower().replace(" ", "_")


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


@dataclass(frozen=True, slots=True)
class Problem:
    """One error the service can answer. Raised with `fields`: they fill the `{placeholders}` of `message`,
    and those named in `details` are also sent in `details`, after the reason."""

    status: int
    message: str
    reason: str | None = None
    details: tuple[str, ...] = ()
    headers: dict[str, str] | None = field(default=None, hash=False)
    summary: str = ""  # for the OpenAPI document, when the message is a template

    @property
    def code(self) -> str:
        return code_of(self.status)

    def error(self, **fields: Any) -> ApiError:
        text = self.message.format(**fields) if fields else self.message
        details = {"reason": self.reason} if self.reason is not None else {}
        details.update((name, fields[name]) for name in self.details if name in fields)
        return ApiError(self.status, text, details or None, self.headers)

    def describe(self) -> str:
        return self.summary or self.message


# ------------------------------------------------------------------------------------------- the catalogue
# 400: the request cannot be read.
BAD_JSON = Problem(400, "request body is not valid JSON: {detail}", summary="The body is not valid JSON")
BAD_HEADER_REPEATED = Problem(400, "send the {name} header once", summary="A single-valued header repeated")
BAD_IF_MATCH = Problem(400, 'If-Match must be "*" or a list of versions such as "3"')
IF_MATCH_TOO_LONG = Problem(
    400, "If-Match lists at most {limit} versions", summary="If-Match lists over 64 versions"
)
BAD_IDEMPOTENCY_KEY = Problem(400, "Idempotency-Key must be 1-255 printable ASCII characters")
IDEMPOTENCY_KEY_REQUIRED = Problem(400, "Idempotency-Key header is required")
BAD_TENANT = Problem(400, "tenant id must be 1-64 characters of [A-Za-z0-9._:-]")
BAD_CURSOR = Problem(400, "cursor is not valid; pass back nextCursor unchanged")
BAD_ACTIVE = Problem(400, "active must be true or false")
BAD_LIMIT = Problem(400, "limit must be an integer from 1 to {high}", summary="limit out of range")
# 401 / 403: who is calling.
TOKEN_REQUIRED = Problem(401, "a verified bearer token is required", headers=CHALLENGE)
IDENTITY_REQUIRED = Problem(401, "send X-Tenant-Id or Authorization: Bearer <JWT>", headers=CHALLENGE)
BAD_AUTHORIZATION = Problem(401, "Authorization must be 'Bearer <JWT>'", headers=CHALLENGE)
TOKEN_WITHOUT_TENANT = Problem(401, "the token has no string tenant_id claim", headers=CHALLENGE)
TOKEN_EXPIRED = Problem(401, "the token has expired", headers=CHALLENGE)
TOKEN_INVALID = Problem(401, "the token is not a valid JWT", headers=CHALLENGE)
# The provider's webhook (Standard Webhooks signature): nothing is read or changed before it passes.
WEBHOOK_HEADERS_MISSING = Problem(
    401,
    "send webhook-id (1-255 visible ASCII characters), webhook-timestamp (Unix seconds), webhook-signature",
    "webhook_headers_missing",
    headers=WEBHOOK_CHALLENGE,
)
WEBHOOK_TIMESTAMP_OUT_OF_TOLERANCE = Problem(
    401,
    "webhook-timestamp is more than 300 s away from now",
    "webhook_timestamp_out_of_tolerance",
    headers=WEBHOOK_CHALLENGE,
)
WEBHOOK_SIGNATURE_MISMATCH = Problem(
    401,
    "no webhook-signature entry matches a configured secret",
    "webhook_signature_mismatch",
    headers=WEBHOOK_CHALLENGE,
)
TENANT_MISMATCH = Problem(403, "X-Tenant-Id does not match the token's tenant")
BODY_TENANT_MISMATCH = Problem(403, "tenantId in the body does not match the caller's tenant")
ROLE_REQUIRED = Problem(
    403,
    "this operation needs the {role} role",
    "role_required",
    ("role",),
    summary="The caller lacks a role the operation needs (X-Roles in dev mode, the token's roles claim)",
)
# 404
ORDER_NOT_FOUND = Problem(404, "order not found")
PRODUCT_NOT_FOUND = Problem(404, "product not found")
PAYMENT_NOT_FOUND = Problem(404, "payment not found")
# 409: the request is valid, the resource's state refuses it.
STALE_VERSION = Problem(409, "stale version", "stale_version", ("currentVersion",))
INVALID_TRANSITION = Problem(
    409,
    "cannot {action} an order that is {currentStatus}",
    "invalid_transition",
    ("currentStatus",),
    summary="The order's status does not allow this change",
)
IDEMPOTENCY_KEY_REUSED = Problem(
    409, "this Idempotency-Key was already used for a different request", "idempotency_key_reused"
)
REQUEST_IN_PROGRESS = Problem(
    409,
    "a concurrent request on the same key or order is still in progress; retry shortly",
    "request_in_progress",
    headers=RETRY_SOON,
)
SKU_TAKEN = Problem(409, "another product of this tenant has this sku", "sku_taken")
PAYMENT_EXISTS = Problem(
    409, "the order already has a pending or succeeded payment", "payment_exists", ("paymentId",)
)
PAYMENT_SETTLED = Problem(
    409,
    "the payment has already {currentStatus}",
    "payment_settled",
    ("currentStatus",),
    summary="The payment was already settled the other way",
)
AMOUNT_MISMATCH = Problem(
    422,
    "amountCents must be the payment's amount, {expectedAmountCents}",
    "amount_mismatch",
    ("expectedAmountCents",),
    summary="The settled amount differs from the payment's",
)
# Orders with items: the catalogue and its stock.
UNKNOWN_PRODUCT = Problem(
    422, "product {productId} is not in the catalogue", "unknown_product", ("productId",)
)
DUPLICATE_LINE = Problem(
    422, "product {productId} is listed twice: list each product once", details=("productId",)
)
PRODUCT_INACTIVE = Problem(409, "product {productId} is not for sale", "product_inactive", ("productId",))
INSUFFICIENT_STOCK = Problem(
    409,
    "not enough stock",
    "insufficient_stock",
    ("items", "available"),
    summary="Not enough stock: details.items (productId, requested, available per short line) or .available",
)
TOTAL_MISMATCH = Problem(
    409,
    "totalCents must be the order's total, {expectedTotalCents}",
    "total_mismatch",
    ("expectedTotalCents",),
    summary="totalCents differs from the total of the order's items",
)
TOTAL_REQUIRED = Problem(422, "totalCents is required to confirm an order without items")
OUT_OF_RANGE = Problem(422, "a total or a stock would exceed 2147483647")
# 413 / 422 / 428
BODY_TOO_LARGE = Problem(413, "request body exceeds {limit} bytes", summary="Body larger than 64 KiB")
WRONG_SHAPE = Problem(422, "{detail}", summary="JSON of the wrong shape: the message names the field")
TOTAL_OUT_OF_RANGE = Problem(422, "totalCents must be between 0 and 2147483647")
IF_MATCH_REQUIRED = Problem(428, 'If-Match is required: send the ETag you last saw, e.g. If-Match: "1"')
# 429: the tenant's rate limit (ORDERS_RATE_LIMIT_*); Retry-After and RateLimit fields set per request.
RATE_LIMITED = Problem(
    429,
    "rate limit of this tenant's {policy} exceeded; retry after Retry-After seconds",
    details=("policy",),
    summary="The tenant's rate limit for reads or writes is used up; nothing was done (see Retry-After)",
)
# The HTTP layer's own refusals (orders_svc/serving.py), before any route runs.
MALFORMED_HTTP = Problem(400, "malformed HTTP request")
TOO_BUSY = Problem(503, "too many requests in progress; retry shortly", headers=RETRY_SOON)
HEAD_TOO_LARGE = Problem(
    431,
    "request head exceeds {limit} bytes or {count} header lines",
    summary="Request line and headers over the configured caps; the connection is closed",
)
REQUEST_TIMEOUT = Problem(
    408,
    "the request {part} did not arrive within {seconds} s",
    summary="Request head or body not received in time; the connection is closed",
)
# 5xx
INTERNAL = Problem(500, "internal error", summary="Unexpected failure, no internals")
UNAVAILABLE = Problem(503, "the database is unavailable; retry shortly", headers=RETRY_SOON)
POOL_EXHAUSTED = Problem(
    503,
    "every database connection is busy; retry shortly",
    "pool_exhausted",
    headers=RETRY_SOON,
)
LOCK_UNAVAILABLE = Problem(
    503,
    "the data is locked by maintenance; retry shortly",
    "lock_not_available",
    headers=RETRY_SOON,
)
SCHEMA_NOT_MIGRATED = Problem(
    503,
    "the database schema lacks migrations of this build: run `orders-svc migrate`",
    "schema_not_migrated",
    ("missingMigrations",),  # named on /readyz
    RETRY_SOON,
)

# Database constraints a client's request can break, by constraint name.
BY_CONSTRAINT: dict[str, Problem] = {
    "orders_total_cents_check": TOTAL_OUT_OF_RANGE,
    "orders_tenant_id_check": BAD_TENANT,
    "idempotency_keys_key_check": BAD_IDEMPOTENCY_KEY,
    "products_tenant_sku_key": SKU_TAKEN,
    # One event of a type per order: a second would mean the order changed state twice the same way.
    "outbox_order_event_key": Problem(409, "the order already changed state", "invalid_transition"),
}

# What every tenant operation may answer, whatever it does.
COMMON = (
    BAD_HEADER_REPEATED,
    BAD_TENANT,
    IDENTITY_REQUIRED,
    TOKEN_INVALID,
    TENANT_MISMATCH,
    INTERNAL,
    UNAVAILABLE,
    POOL_EXHAUSTED,
    LOCK_UNAVAILABLE,
    SCHEMA_NOT_MIGRATED,
    RATE_LIMITED,
    TOO_BUSY,
    REQUEST_TIMEOUT,
    HEAD_TOO_LARGE,
)


# ------------------------------------------------------------------------------------------- rendering
_encode = msgspec.json.Encoder().encode


def error_response(
    status: int,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = _encode(Error(code=code_of(status), message=message, details=details))
    return Response(body, status, headers=headers, media_type="application/json")


def body_of(problem: Problem, **fields: Any) -> bytes:
    error = problem.error(**fields)
    return _encode(Error(code=code_of(error.status), message=error.message, details=error.details))


async def api_error_handler(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.details, exc.headers)


async def http_exception_handler(_: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (unknown route, wrong method; its `Allow` kept) in the envelope."""
    assert isinstance(exc, HTTPException)
    message = {404: "no such route", 405: "method not allowed for this route"}.get(
        exc.status_code, HTTPStatus(exc.status_code).phrase
    )
    return error_response(exc.status_code, message, headers=dict(exc.headers or {}))
