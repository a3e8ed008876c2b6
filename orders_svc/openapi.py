"""/openapi.json, generated from the route table: operations, msgspec types and the error catalogue."""

from collections.abc import Iterable
from typing import Any

import msgspec
import swagger_ui_bundle

from . import __version__, errors
from .errors import Problem
from .preconditions import IDEMPOTENCY_KEY_PATTERN, IF_MATCH_PATTERN
from .routing import Operation
from .schemas import TENANT_PATTERN, Error

__all__ = ["IDEMPOTENCY_KEY_PATTERN", "IF_MATCH_PATTERN", "SWAGGER_DIR", "build_spec"]

_REF = "#/components/schemas/{name}"
JSON = "application/json"
SWAGGER_DIR = swagger_ui_bundle.swagger_ui_path


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
_CHALLENGE = _header("Bearer: how to authenticate")

_TENANT = {
    "name": "X-Tenant-Id",
    "in": "header",
    "required": False,
    "description": "The caller's tenant (dev mode); or send Authorization: Bearer <JWT> (claim tenant_id)",
    "schema": {"type": "string", "pattern": TENANT_PATTERN},
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
}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "description": "1-255 printable ASCII characters; retries with the same key and request replay the "
    "first response for the key's lifetime (default 1 h)",
    "schema": {"type": "string", "minLength": 1, "maxLength": 257, "pattern": IDEMPOTENCY_KEY_PATTERN},
}


def _parameters(op: Operation) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [_TENANT] if op.tenant else []
    if op.roles:
        parameters.append(_ROLES)
    parameters += [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
        for name in op.path_params
    ]
    if op.if_match is not None:
        parameters.append({**_IF_MATCH, "required": op.if_match == "required"})
    if op.idempotency_key is not None:
        parameters.append({**_IDEMPOTENCY_KEY, "required": op.idempotency_key == "required"})
    return parameters + list(op.query)


def _success(op: Operation) -> dict[str, Any]:
    if op.response is None:
        return {str(op.status): {"description": "OK", "content": {op.content_type: {"schema": {}}}}}
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
    content = {JSON: {"schema": _ref(op.response.__name__)}}
    responses = {str(op.status): {"description": op.summary, "content": content, "headers": headers}}
    if op.status == 201:
        responses["200"] = {"description": "Replay of the first response for this key", **responses["201"]}
    return responses


def _failures(problems: Iterable[Problem]) -> dict[str, Any]:
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
        response: dict[str, Any] = {
            "description": f"`{listed[0].code}`:\n" + "\n".join(lines),
            "content": {JSON: {"schema": schema}},
        }
        headers = {"X-Request-ID": _REQUEST_ID}
        if any(p.headers and "Retry-After" in p.headers for p in listed):
            headers["Retry-After"] = _RETRY_AFTER
        if any(p.headers and "WWW-Authenticate" in p.headers for p in listed):
            headers["WWW-Authenticate"] = _CHALLENGE
        response["headers"] = headers
        responses[str(status)] = response
    return responses


def _operation(op: Operation) -> dict[str, Any]:
    document: dict[str, Any] = {"summary": op.summary, "operationId": op.operation_id}
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
            "content": {JSON: {"schema": _ref(op.body.__name__)}},
        }
    problems = (*errors.COMMON, *op.errors) if op.tenant else op.errors
    if op.roles:
        problems = (*problems, errors.ROLE_REQUIRED)
    document["responses"] = {**_success(op), **_failures(problems)}
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
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
