"""Operations, declared once next to their handlers; the routes, `Allow` and the OpenAPI paths come from them.

An `Operation` names its method and path, the headers it reads (tenant, If-Match, Idempotency-Key), the roles
it needs, its body and response types, its errors and its summary. `endpoint` turns it into the request
handling that reads exactly what it declares, in the contract's order (identity and roles, path, If-Match,
body, key), so the document cannot promise what the code does not do.
"""

import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from . import errors
from .errors import ApiError, Problem, api_error_handler, http_exception_handler
from .preconditions import fingerprint, if_match_header, parse_idempotency_key, parse_if_match, single_header
from .writes import Idempotency, Reply

Presence = Literal["required", "optional"] | None
MAX_BODY = 64 * 1024
_PARAM = re.compile(r"{([a-z_]+)}")
# Path parameters are ids: one that is not a UUID names nothing, so it is that resource's 404.
PATH_PARAMS: dict[str, Problem] = {
    "order_id": errors.ORDER_NOT_FOUND,
    "product_id": errors.PRODUCT_NOT_FOUND,
    "payment_id": errors.PAYMENT_NOT_FOUND,
}


class Call:
    """What a handler gets: the request as its operation declared it, read and checked."""

    __slots__ = ("body", "idem", "ids", "if_match_sent", "pool", "request", "state", "tenant", "versions")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.state: Any = request.app.state  # the application's: settings, pool, auth, limits
        self.pool: Any = self.state.pool
        self.tenant = ""
        self.ids: dict[str, uuid.UUID] = {}
        self.versions: list[int] | None = None  # None: If-Match `*` or absent
        self.if_match_sent = False
        self.body: Any = None
        self.idem: Idempotency | None = None


Handler = Callable[[Call], Awaitable[Reply | bytes | Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    handler: Handler
    body: type | None = None  # a msgspec Struct; an empty body reads as `{}` unless body_required
    body_required: bool = False
    response: type | None = None  # the success body's type (JSON), when there is one
    status: int = 200
    if_match: Presence = None
    # With if_match="required": raises the resource's 404 when it does not exist, so that a request without
    # If-Match learns that first (the contract's order), and 428 only for a resource that is there.
    exists: "Callable[[Call], Awaitable[None]] | None" = None
    idempotency_key: Presence = None
    tenant: bool = True
    roles: tuple[str, ...] = ()  # every one needed (403 otherwise), checked right after the tenant
    errors: tuple[Problem, ...] = ()
    query: tuple[dict[str, Any], ...] = ()
    # Two paths for one operation (PATCH /orders/{id} and /orders/{id}/confirm) fingerprint as one.
    fingerprint_path: str | None = None
    description: str = ""
    content_type: str = "application/json"
    # The success body's example in the OpenAPI document, when its type's own (schemas.EXAMPLES) does not
    # fit this operation: a confirm answers a confirmed order.
    response_example: Any = None
    # Checks the raw body before it is decoded (a webhook's signature), raising from the catalogue.
    verify: Callable[[Request, bytes], None] | None = None
    location: str | None = None  # where a 201 points when not below `path`, e.g. "/payments"

    @property
    def path_params(self) -> list[str]:
        return _PARAM.findall(self.path)


_JSON = (b"content-type", b"application/json")
_REPLAYED = (b"idempotent-replayed", b"true")


class JsonResponse(Response):
    """A JSON body the service encoded, with the headers a handler gave: what Starlette's `Response` sends
    for it, with its raw headers written directly rather than through its generic checks."""

    media_type = "application/json"

    def __init__(self, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.background = None
        self.body = body
        raw = [(b"content-length", b"%d" % len(body)), _JSON]
        if headers:
            raw += [(name.lower().encode("latin-1"), v.encode("latin-1")) for name, v in headers.items()]
        self.raw_headers = raw


def render(result: Reply | bytes | Response) -> Response:
    if isinstance(result, Response):
        return result
    if isinstance(result, bytes):
        return JsonResponse(result)
    response = JsonResponse(result.body, result.status, result.headers)
    if result.replayed:
        response.raw_headers.append(_REPLAYED)
    return response


async def read_body(request: Request) -> bytes:
    """The raw body, refused past 64 KiB before it is all read. Content-Type is not consulted."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise errors.BODY_TOO_LARGE.error(limit=MAX_BODY)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise errors.BODY_TOO_LARGE.error(limit=MAX_BODY)
        chunks.append(chunk)
    return b"".join(chunks)


def decode(decoder: Callable[[bytes], Any], body: bytes, empty: bytes | None = None) -> Any:
    """Decode a JSON body: malformed JSON is a 400, JSON of the wrong shape a 422 naming the field."""
    data = body if body.strip() or empty is None else empty
    try:
        return decoder(data)
    except msgspec.ValidationError as exc:
        wrong_shape = str(exc)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise errors.BAD_JSON.error(detail=exc) from None
    # The typed decoder stops at the first bad field, before it has read the rest of the document, so
    # `{"a":}` or `{}{}` would pass for a wrong shape: only well-formed JSON is a 422.
    try:
        msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise errors.BAD_JSON.error(detail=exc) from None
    raise errors.WRONG_SHAPE.error(detail=wrong_shape)


def endpoint(op: Operation) -> Endpoint:
    """The request handling `op` declares, around its handler."""
    decoder: Callable[[bytes], Any] | None = None
    if op.body is not None:
        decoder = msgspec.json.Decoder(op.body).decode
    empty = None if op.body_required else b"{}"
    params = [(name, PATH_PARAMS[name]) for name in op.path_params]
    fingerprinted = op.fingerprint_path or op.path
    handler, exists = op.handler, op.exists
    roles = op.roles
    verify = op.verify

    async def run(request: Request) -> Response:
        call = Call(request)
        if roles:
            call.tenant = call.state.auth.tenant_with_roles(request, roles)
        elif op.tenant:
            call.tenant = call.state.auth.tenant(request)
        if call.tenant and (limits := call.state.limits) is not None:
            limits.check(request.scope, call.tenant)  # before anything reads the body or the database
        for name, missing in params:
            try:
                call.ids[name] = uuid.UUID(request.path_params[name])
            except ValueError:
                raise missing.error() from None
        if op.if_match is not None:
            raw_if_match = if_match_header(request.headers)
            if raw_if_match is not None:
                call.if_match_sent = True
                call.versions = parse_if_match(raw_if_match)
        raw = b""
        if decoder is not None:
            raw = await read_body(request)
            if verify is not None:
                verify(request, raw)
            call.body = decode(decoder, raw, empty)
        if op.idempotency_key is not None:
            key = single_header(request.headers, "Idempotency-Key")
            if key is not None:
                path = fingerprinted.format(**call.ids) if call.ids else fingerprinted
                ttl = call.state.settings.idempotency_ttl
                call.idem = Idempotency(parse_idempotency_key(key), fingerprint(op.method, path, raw), ttl)
            elif op.idempotency_key == "required":
                raise errors.IDEMPOTENCY_KEY_REQUIRED.error()
        if op.if_match == "required" and not call.if_match_sent:
            if exists is not None:
                await exists(call)
            raise errors.IF_MATCH_REQUIRED.error()
        return render(await handler(call))

    return run


Table = dict[str, dict[str, Endpoint]]


def table(operations: Iterable[Operation]) -> Table:
    """Each path's endpoint per method, from the operations; HEAD goes with GET."""
    by_path: Table = {}
    for op in operations:
        methods = by_path.setdefault(op.path, {})
        if op.method in methods:
            raise ValueError(f"{op.method} {op.path} is declared twice")
        methods[op.method] = endpoint(op)
    for methods in by_path.values():
        if "GET" in methods:
            methods["HEAD"] = methods["GET"]
    return by_path


def routes(served: Table) -> list[Route]:
    """One Starlette route per path, serving each of its methods: so a wrong method gets a 405 naming them
    all in `Allow`."""
    return [_route(path, methods) for path, methods in served.items()]


class _Node:
    """A path segment of the route table: the literal segments below it, its `{param}` child, and what is
    served when a path ends here (its route and an endpoint per method)."""

    __slots__ = ("literal", "methods", "param", "param_name", "route")

    def __init__(self) -> None:
        self.literal: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.param_name = ""
        self.route: Route | None = None
        self.methods: dict[str, Endpoint] = {}


class Dispatch:
    """The ASGI app that serves the route table: an operation's request goes from a walk of a tree of path
    segments straight to its endpoint, its `ApiError` answered in the envelope there. Everything else (an
    unknown path or method, the documentation's assets, the lifespan) goes to `fallback`: Starlette's router
    behind its exception middleware, which answers exactly as it would have for any request.

    Starlette's stack passes a request through two middleware and tries the routes one regular expression
    at a time; for the requests the service exists for, that was some 10 % of its CPU. A path the tree
    matches is one Starlette's routes match too: each `{param}` takes one non-empty segment, as their
    default convertor does, and the tree is only walked where no `root_path` is in play.
    """

    def __init__(self, served: Table, routes: Iterable[Route], fallback: ASGIApp) -> None:
        self.fallback = fallback
        self.root = _Node()
        route_of = {route.path: route for route in routes}
        for path, methods in served.items():
            node = self.root
            for segment in path.split("/")[1:]:
                if segment.startswith("{"):
                    name = segment.strip("{}")
                    if node.param is not None and node.param_name != name:
                        raise ValueError(f"{path} names {name} where another path names {node.param_name}")
                    node.param = node.param or _Node()
                    node.param_name = name
                    node = node.param
                else:
                    node = node.literal.setdefault(segment, _Node())
            node.route, node.methods = route_of[path], methods

    def find(self, path: str) -> tuple[_Node, dict[str, str]] | None:
        """The node serving `path` (which starts with `/`) and its path parameters, if one does."""
        node = self.root
        params: dict[str, str] = {}
        for segment in path.split("/")[1:]:
            child = node.literal.get(segment)
            if child is None:
                if not segment or node.param is None:
                    return None
                params[node.param_name] = segment
                child = node.param
            node = child
        return (node, params) if node.route is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" and not scope.get("root_path") else ""
        if path.startswith("/"):
            found = self.find(path)
            if found is not None:
                node, params = found
                served = node.methods.get(scope["method"])
                if served is not None:
                    scope["route"], scope["path_params"] = node.route, params
                    request = Request(scope, receive, send)
                    try:
                        response = await served(request)
                    except ApiError as exc:
                        response = await api_error_handler(request, exc)
                    except HTTPException as exc:
                        response = await http_exception_handler(request, exc)
                    await response(scope, receive, send)
                    return
        await self.fallback(scope, receive, send)


def _route(path: str, methods: dict[str, Endpoint]) -> Route:
    if len(methods) == 1:
        [only] = methods.values()
        return Route(path, only, methods=list(methods))

    async def dispatch(request: Request) -> Response:
        return await methods[request.method](request)

    return Route(path, dispatch, methods=list(methods))
