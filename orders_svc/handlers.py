"""HTTP handlers: read tenant and path, decode, call one use case, encode. Nothing else."""

import uuid
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from . import orders
from .errors import ApiError
from .orders import Idempotency, Reply
from .pagination import decode_cursor, parse_limit
from .preconditions import (
    fingerprint,
    if_match_header,
    parse_idempotency_key,
    parse_if_match,
    single_header,
)
from .schemas import decode_close, decode_confirm, decode_create

MAX_BODY = 64 * 1024


def json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status, headers=headers, media_type="application/json")


def render(reply: Reply) -> Response:
    headers = dict(reply.headers)
    if reply.replayed:
        headers["idempotent-replayed"] = "true"
    return json_response(reply.body, reply.status, headers)


async def read_body(request: Request) -> bytes:
    """The raw body, refused past 64 KiB before it is all read. Content-Type is not consulted."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise ApiError(413, f"request body exceeds {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, f"request body exceeds {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decode(decoder: Any, body: bytes, empty: bytes | None = None) -> Any:
    """Decode a JSON body: malformed JSON is a 400, JSON of the wrong shape a 422 naming the field."""
    data = body if body.strip() or empty is None else empty
    try:
        return decoder(data)
    except msgspec.ValidationError as exc:
        wrong_shape = str(exc)
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    # The typed decoder stops at the first bad field, before it has read the rest of the document, so
    # `{"a":}` or `{}{}` would pass for a wrong shape: only well-formed JSON is a 422.
    try:
        msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    raise ApiError(422, wrong_shape)


def order_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["order_id"])
    except ValueError:
        raise ApiError(404, "order not found") from None


def idempotency(request: Request, path: str, body: bytes, required: bool) -> Idempotency | None:
    raw = single_header(request.headers, "Idempotency-Key")
    if raw is None:
        if required:
            raise ApiError(400, "Idempotency-Key header is required")
        return None
    key = parse_idempotency_key(raw)
    ttl = request.app.state.settings.idempotency_ttl
    return Idempotency(key, fingerprint(request.method, path, body), ttl)


async def create_order(request: Request) -> Response:
    tenant = request.app.state.auth.tenant(request)
    body = await read_body(request)
    command = decode(decode_create, body, empty=b"{}")
    if command.tenant_id is not None and command.tenant_id != tenant:
        raise ApiError(403, "tenantId in the body does not match the caller's tenant")
    idem = idempotency(request, "/orders", body, required=True)
    assert idem is not None
    return render(await orders.create_order(request.app.state.pool, tenant, idem))


async def confirm_order(request: Request) -> Response:
    tenant = request.app.state.auth.tenant(request)
    oid = order_id(request)
    if_match = if_match_header(request.headers)
    versions = parse_if_match(if_match) if if_match is not None else None
    body = await read_body(request)
    command = decode(decode_confirm, body)
    idem = idempotency(request, f"/orders/{oid}/confirm", body, required=False)
    pool = request.app.state.pool
    if if_match is None:
        await orders.require_order(pool, tenant, oid)
        raise ApiError(428, 'If-Match is required: send the ETag you last saw, e.g. If-Match: "1"')
    reply = await orders.confirm_order(pool, tenant, oid, versions, command.total_cents, idem)
    return render(reply)


async def close_order(request: Request) -> Response:
    tenant = request.app.state.auth.tenant(request)
    oid = order_id(request)
    if_match = if_match_header(request.headers)
    versions = parse_if_match(if_match) if if_match is not None else None
    body = await read_body(request)
    decode(decode_close, body, empty=b"{}")
    idem = idempotency(request, f"/orders/{oid}/close", body, required=False)
    return render(await orders.close_order(request.app.state.pool, tenant, oid, versions, idem))


async def get_order(request: Request) -> Response:
    tenant = request.app.state.auth.tenant(request)
    return render(await orders.get_order(request.app.state.pool, tenant, order_id(request)))


async def list_orders(request: Request) -> Response:
    tenant = request.app.state.auth.tenant(request)
    limit = parse_limit(request.query_params.get("limit"))
    cursor = request.query_params.get("cursor")
    after = decode_cursor(cursor) if cursor is not None else None
    return json_response(await orders.list_orders(request.app.state.pool, tenant, after, limit))
