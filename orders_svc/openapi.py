"""/openapi.json, generated from the route table: operations, msgspec types and the error catalogue."""

import string
from collections.abc import Iterable
from typing import Any

import msgspec

from . import __version__, errors
from .errors import Problem
from .preconditions import IDEMPOTENCY_KEY_PATTERN, IF_MATCH_PATTERN
from .routing import Operation
from .schemas import EXAMPLE_ORDER_ID, EXAMPLE_PRODUCT_ID, EXAMPLE_TENANT, EXAMPLES, TENANT_PATTERN, Error
from .states import TRANSITIONS, OrderStatus

__all__ = ["IDEMPOTENCY_KEY_PATTERN", "IF_MATCH_PATTERN", "build_spec"]

_REF = "#/components/schemas/{name}"
JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _header(description: str, schema: dict[str, Any] | None = None, required: bool = False) -> dict[str, Any]:
    header = {"description": description, "schema": schema or {"type": "string"}}
    return {**header, "required": True} if required else header


_REQUEST_ID = _header("The request id, echoed or generated", required=True)
_ETAG = _header(
    'The resource\'s version as a strong entity tag, e.g. "1"',
    {"type": "string", "pattern": '^"[1-9][0-9]*"$'},
    required=True,
)
_REPLAYED = _header("true when this is a stored response replayed", {"const": "true"})
_UUID_PATH = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_RETRY_AFTER = _header("Seconds to wait before retrying")

_TENANT = {
    "name": "X-Tenant-Id",
    "in": "header",
    "required": False,
    "description": "The caller's tenant (dev mode); or send Authorization: Bearer <JWT> (claim tenant_id)",
    "schema": {"type": "string", "pattern": TENANT_PATTERN},
    "example": EXAMPLE_TENANT,
}
_ROLES = {
    "name": "X-Roles",
    "in": "header",
    "required": False,
    "description": "The caller's roles, comma-separated, e.g. admin (dev mode; in jwt mode only the verified "
    "token's roles claim counts and this header is ignored)",
    "schema": {"type": "string"},
}
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "description": 'Expected version: "3", 3, a list ("2", "3") or *. Weak tags never match.',
    "schema": {"type": "string", "pattern": IF_MATCH_PATTERN},
    "example": '"1"',
}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "description": "1-255 printable ASCII characters; retries with the same key and request replay the "
    "first response for the key's lifetime (default 1 h)",
    "schema": {"type": "string", "minLength": 1, "maxLength": 257, "pattern": IDEMPOTENCY_KEY_PATTERN},
    "example": "checkout-7f3c2a91",
}
_PATH_ID = {"in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
_PATH_EXAMPLES = {
    "order_id": str(EXAMPLE_ORDER_ID),
    "product_id": str(EXAMPLE_PRODUCT_ID),
    "payment_id": "0195f2c5-0a1b-7c2d-8e3f-4a5b6c7d8e9f",
}
# Operations by resource (a tenant's orders, the catalogue), then the service's own, which need no tenant.
TAGS = [
    {
        "name": "orders",
        "description": "A tenant's orders: X-Tenant-Id (dev mode) or a bearer token (jwt mode)",
    },
    {
        "name": "products",
        "description": "A tenant's catalogue: anyone of the tenant reads, the admin role writes",
    },
    {"name": "service", "description": "Liveness, readiness, this document and the docs pages; no tenant"},
]
# The document's own and the HTML pages' examples; typed bodies take theirs from schemas.EXAMPLES.
_UNTYPED_EXAMPLES = {
    JSON: {"openapi": "3.1.0", "info": {"title": "orders-svc", "version": __version__}, "paths": {}},
    "text/html": '<!doctype html><html lang="en">…</html>',
    "text/plain": "# TYPE http_server_active_requests gauge\nhttp_server_active_requests 1.0\n",
}
# What fills the catalogue's message templates in the error examples.
_EXAMPLE_FIELDS: dict[str, Any] = {
    "name": "Idempotency-Key",
    "high": 100,
    "limit": 64 * 1024,
    "currentVersion": 3,
    "count": 1,
    "missingMigrations": ["0007_products"],
    "role": "admin",
    "productId": str(EXAMPLE_PRODUCT_ID),
    "expectedTotalCents": 2500,
}
_EXAMPLE_FIELDS_OF: dict[Problem, dict[str, Any]] = {
    errors.BAD_JSON: {"detail": "Input data was truncated"},
    errors.WRONG_SHAPE: {"detail": "Expected `int`, got `str` - at `$.totalCents`"},
}
# Each catalogue entry's name (ORDER_NOT_FOUND → order_not_found) names its example.
_NAMES = {id(value): name.lower() for name, value in vars(errors).items() if isinstance(value, Problem)}


def _parameters(op: Operation) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [_TENANT] if op.tenant else []
    if op.roles:
        parameters.append(_ROLES)
    parameters += [{"name": name, **_PATH_ID, "example": _PATH_EXAMPLES[name]} for name in op.path_params]
    if op.if_match is not None:
        parameters.append({**_IF_MATCH, "required": op.if_match == "required"})
    if op.idempotency_key is not None:
        parameters.append({**_IDEMPOTENCY_KEY, "required": op.idempotency_key == "required"})
    return parameters + list(op.query)


def _tag(op: Operation) -> str:
    """The resource an operation's path starts with, for tenant operations; `service` for the others."""
    resource = op.path.split("/")[1]
    return resource if op.tenant and resource in {t["name"] for t in TAGS} else "service"


def _example(value: Any) -> Any:
    """An instance of a wire type as it goes on the wire (camelCase, UUIDs as strings)."""
    return msgspec.to_builtins(value)


def _success(op: Operation) -> dict[str, Any]:
    if op.response is None:
        schema = {"type": "object"} if op.content_type == JSON else {"type": "string"}
        media = {"schema": schema, "example": _UNTYPED_EXAMPLES[op.content_type]}
        return {str(op.status): {"description": op.summary, "content": {op.content_type: media}}}
    headers: dict[str, Any] = {"X-Request-ID": _REQUEST_ID}
    versioned = "version" in getattr(op.response, "__struct_fields__", ())
    if versioned and (op.path_params or op.status == 201):  # one resource: its version
        headers["ETag"] = _ETAG
    if op.idempotency_key is not None:
        headers["Idempotent-Replayed"] = _REPLAYED
    if op.status == 201:
        location = f"^{op.location or op.path}/{_UUID_PATH}$"
        headers["Location"] = _header(
            f"{op.location or op.path}/{{id}} of the created resource", {"pattern": location}, True
        )
    example = op.response_example if op.response_example is not None else EXAMPLES[op.response]
    content = {JSON: {"schema": _ref(op.response.__name__), "example": _example(example)}}
    responses = {str(op.status): {"description": op.summary, "content": content, "headers": headers}}
    if op.status == 201:
        responses["200"] = {"description": "Replay of the first response for this key", **responses["201"]}
    return responses


def _failures(problems: Iterable[Problem], fields: dict[str, Any]) -> dict[str, Any]:
    """Error responses by status; each lists its codes, reasons and messages from the catalogue."""
    by_status: dict[int, list[Problem]] = {}
    for problem in problems:
        listed = by_status.setdefault(problem.status, [])
        if problem not in listed:
            listed.append(problem)
    responses: dict[str, Any] = {}
    for status in sorted(by_status):
        listed = by_status[status]
        lines = [
            f"- {p.describe()}" + (f" (details.reason `{p.reason}`)" if p.reason else "") for p in listed
        ]
        schema: dict[str, Any] = _ref("Error")
        reasons = [p.reason for p in listed if p.reason]
        if reasons:
            schema = {
                "allOf": [
                    _ref("Error"),
                    {"properties": {"details": {"properties": {"reason": {"enum": sorted(set(reasons))}}}}},
                ]
            }
        examples = {_example_name(p): _error_example(p, fields) for p in listed}
        response: dict[str, Any] = {
            "description": f"`{listed[0].code}`, when:\n\n" + "\n".join(lines),
            "content": {JSON: {"schema": schema, "examples": examples}},
        }
        headers = {"X-Request-ID": _REQUEST_ID}
        if any(p.headers and "Retry-After" in p.headers for p in listed):
            headers["Retry-After"] = _RETRY_AFTER
        challenges = sorted(
            {p.headers["WWW-Authenticate"] for p in listed if p.headers and "WWW-Authenticate" in p.headers}
        )
        if challenges:
            headers["WWW-Authenticate"] = _header(f"{' or '.join(challenges)}: how to authenticate")
        response["headers"] = headers
        responses[str(status)] = response
    return responses


def _example_name(problem: Problem) -> str:
    return _NAMES.get(id(problem)) or problem.reason or problem.code


def _error_example(problem: Problem, fields: dict[str, Any]) -> dict[str, Any]:
    """The body the service sends for `problem`, rendered by the catalogue itself. A placeholder with no
    example value here shows as <name>."""
    fields = {**fields, **_EXAMPLE_FIELDS_OF.get(problem, {})}
    placeholders = {name for _, name, _, _ in string.Formatter().parse(problem.message) if name}
    fields |= {name: f"<{name}>" for name in placeholders - fields.keys()}
    body = msgspec.json.decode(errors.body_of(problem, **fields))
    return {"summary": _described(problem, fields), "value": body}


def _described(problem: Problem, fields: dict[str, Any]) -> str:
    """The catalogue's summary of a problem, or its message with the example's values in its template."""
    text = problem.describe()
    return text.format(**fields) if "{" in text else text


def _operation_fields(op: Operation) -> dict[str, Any]:
    """Example values that depend on the operation. An operation that changes an order's status refuses it
    from a status it does not start from: the example names its own action and such a status."""
    if op.path.startswith("/products"):  # a stock change: the product's stock, not an order's lines
        return {"available": 1}
    short = [{"productId": str(EXAMPLE_PRODUCT_ID), "requested": 3, "available": 1}]
    return {**_transition_fields(op), "items": short}


def _transition_fields(op: Operation) -> dict[str, Any]:
    for transition in TRANSITIONS:
        if op.operation_id.startswith(transition.action):
            refused = [s for s in OrderStatus if s not in transition.sources and s != transition.target]
            return {"action": transition.action, "currentStatus": refused[-1]}
    return {"action": "change", "currentStatus": OrderStatus.CLOSED}


def _operation(op: Operation) -> dict[str, Any]:
    document: dict[str, Any] = {"tags": [_tag(op)], "summary": op.summary, "operationId": op.operation_id}
    description = op.description
    if op.roles:
        needed = ", ".join(op.roles)
        description = f"Needs the role(s) {needed}. {description}".strip()
    if description:
        document["description"] = description
    parameters = _parameters(op)
    if parameters:
        document["parameters"] = parameters
    if op.body is not None:
        document["requestBody"] = {
            "required": op.body_required,
            "content": {JSON: {"schema": _ref(op.body.__name__), "example": _example(EXAMPLES[op.body])}},
        }
    problems = (*errors.COMMON, *op.errors) if op.tenant else op.errors
    if op.roles:
        problems = (*problems, errors.ROLE_REQUIRED)
    fields = {**_EXAMPLE_FIELDS, **_operation_fields(op)}
    document["responses"] = {**_success(op), **_failures(problems, fields)}
    if op.tenant:
        document["security"] = [{"bearer": []}, {}]
    return document


def build_spec(operations: Iterable[Operation] | None = None) -> dict[str, Any]:
    if operations is None:
        from .api import OPERATIONS

        operations = OPERATIONS
    operations = list(operations)
    types = {t for op in operations for t in (op.body, op.response) if t is not None} | {Error}
    _, components = msgspec.json.schema_components(sorted(types, key=lambda t: t.__name__), ref_template=_REF)
    paths: dict[str, Any] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "orders-svc",
            "version": __version__,
            "description": "Orders API. Every non-2xx body is {code, message, details?}; a sub-case is "
            "details.reason. Stale If-Match is 409 conflict (not 412), by contract.",
        },
        "servers": [{"url": "/", "description": "The service that serves this document"}],
        "tags": TAGS,
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "jwt auth mode: a token whose tenant_id claim is the caller's tenant. "
                    "In dev mode, send X-Tenant-Id instead.",
                }
            },
        },
    }
