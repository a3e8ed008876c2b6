"""GET /openapi.json, generated from the msgspec types the handlers use, and GET /docs (self-hosted UI)."""

from typing import Any

import msgspec
import swagger_ui_bundle
from starlette.responses import HTMLResponse

from . import __version__
from .pagination import MAX_LIMIT
from .schemas import CloseOrder, ConfirmOrder, CreateOrder, Error, Health, Order, OrderPage

_REF = "#/components/schemas/{name}"
_TYPES = (CreateOrder, ConfirmOrder, CloseOrder, Order, OrderPage, Error, Health)

JSON = "application/json"
SWAGGER_DIR = swagger_ui_bundle.swagger_ui_path


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _header(description: str, schema: dict[str, Any] | None = None, required: bool = False) -> dict[str, Any]:
    header = {"description": description, "schema": schema or {"type": "string"}}
    return {**header, "required": True} if required else header


_ORDER_HEADERS = {
    "ETag": _header(
        'The order\'s version as a strong entity tag, e.g. "1"',
        {"type": "string", "pattern": '^"[1-9][0-9]*"$'},
        required=True,
    ),
    "X-Request-ID": _header("The request id, echoed or generated", required=True),
}
_REPLAY_HEADERS = {
    **_ORDER_HEADERS,
    "Idempotent-Replayed": _header("true when this is a stored response replayed", {"const": "true"}),
}
_CREATE_HEADERS = {
    **_REPLAY_HEADERS,
    "Location": _header(
        "/orders/{id} of the created order",
        {
            "type": "string",
            "pattern": "^/orders/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        },
        required=True,
    ),
}
_RETRY_HEADERS = {"Retry-After": _header("Seconds to wait before retrying", {"type": "string"})}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": _ref("Error")}},
    }
    if headers:
        response["headers"] = headers
    return response


def _ok(description: str, schema: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": _ref(schema)}},
    }
    if headers:
        response["headers"] = headers
    return response


_COMMON_ERRORS = {
    "400": _error("Malformed request: header, JSON, cursor or limit (code bad_request)"),
    "401": _error("Missing or invalid identity (code unauthorized)"),
    "403": _error("Token and X-Tenant-Id, or body tenantId, disagree (code forbidden)"),
    "500": _error("Unexpected failure, no internals (code internal_error)"),
    "503": _error("Database unavailable (code service_unavailable)", _RETRY_HEADERS),
}
_WRITE_ERRORS = {
    "409": _error(
        "Conflict: details.reason is stale_version (with currentVersion), invalid_transition, "
        "idempotency_key_reused or request_in_progress (with Retry-After)",
        _RETRY_HEADERS,
    ),
    "413": _error("Body larger than 64 KiB (code payload_too_large)"),
    "422": _error("Body of the wrong shape (code validation_error)"),
}

_TENANT_PARAM = {
    "name": "X-Tenant-Id",
    "in": "header",
    "required": False,
    "description": "The caller's tenant (dev mode); or send Authorization: Bearer <JWT> (claim tenant_id)",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"},
}
_ID_PARAM = {
    "name": "order_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}
_TAG = r'(W/)?("[0-9]{1,10}"|[0-9]{1,10})'
IF_MATCH_PATTERN = rf"^[ \t]*(\*|{_TAG}([ \t]*,[ \t]*{_TAG})*)[ \t]*$"
# 1-255 printable ASCII, or that inside one pair of double quotes (so `""` alone is refused).
IDEMPOTENCY_KEY_PATTERN = r'^([ -~]|[ -!#-~][ -~]{0,254}|[ -~]{1,254}[ -!#-~]|"[ -~]{1,255}")$'
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


def _body(schema: str, required: bool) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": _ref(schema)}}}


def _confirm(summary: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "operationId": summary.replace(" ", "_").replace("(", "").replace(")", "").lower(),
        "parameters": [_TENANT_PARAM, _ID_PARAM, {**_IF_MATCH, "required": True}, _IDEMPOTENCY_KEY],
        "requestBody": _body("ConfirmOrder", True),
        "responses": {
            "200": _ok("The confirmed order (version + 1)", "Order", _REPLAY_HEADERS),
            **_COMMON_ERRORS,
            "404": _error("No such order for this tenant (code not_found)"),
            **_WRITE_ERRORS,
            "428": _error("If-Match missing (code precondition_required)"),
        },
    }


def build_spec() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(_TYPES, ref_template=_REF)
    paths: dict[str, Any] = {
        "/orders": {
            "post": {
                "summary": "Create a draft order (idempotent)",
                "operationId": "create_order",
                "parameters": [_TENANT_PARAM, {**_IDEMPOTENCY_KEY, "required": True}],
                "requestBody": _body("CreateOrder", False),
                "responses": {
                    "201": _ok("Created", "Order", _CREATE_HEADERS),
                    "200": _ok("Replay of the first response for this key", "Order", _CREATE_HEADERS),
                    **_COMMON_ERRORS,
                    **_WRITE_ERRORS,
                },
            },
            "get": {
                "summary": "List orders, newest first (keyset pagination)",
                "operationId": "list_orders",
                "parameters": [
                    _TENANT_PARAM,
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_LIMIT,
                            "default": 10,
                        },
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "description": "nextCursor of the previous page, passed back unchanged",
                        "schema": {"type": "string", "format": "keyset-cursor", "maxLength": 200},
                    },
                ],
                "responses": {"200": _ok("One page", "OrderPage"), **_COMMON_ERRORS},
            },
        },
        "/orders/{order_id}": {
            "get": {
                "summary": "Get one order",
                "operationId": "get_order",
                "parameters": [_TENANT_PARAM, _ID_PARAM],
                "responses": {
                    "200": _ok("The order", "Order", _ORDER_HEADERS),
                    **_COMMON_ERRORS,
                    "404": _error("No such order for this tenant (code not_found)"),
                },
            },
            "patch": _confirm("Confirm an order"),
        },
        "/orders/{order_id}/confirm": {"patch": _confirm("Confirm an order (confirm path)")},
        "/orders/{order_id}/close": {
            "post": {
                "summary": "Close a confirmed order and record its orders.closed event",
                "operationId": "close_order",
                "parameters": [_TENANT_PARAM, _ID_PARAM, _IF_MATCH, _IDEMPOTENCY_KEY],
                "requestBody": _body("CloseOrder", False),
                "responses": {
                    "200": _ok("The closed order", "Order", _REPLAY_HEADERS),
                    **_COMMON_ERRORS,
                    "404": _error("No such order for this tenant (code not_found)"),
                    **_WRITE_ERRORS,
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "operationId": "healthz",
                "responses": {"200": _ok("Alive", "Health")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: the database answers",
                "operationId": "readyz",
                "responses": {
                    "200": _ok("Ready", "Health"),
                    "503": _error("Database unavailable (code service_unavailable)"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This OpenAPI 3.1 document",
                "operationId": "openapi",
                "responses": {"200": {"description": "The document", "content": {JSON: {"schema": {}}}}},
            }
        },
        "/docs": {
            "get": {
                "summary": "Interactive API docs, served with their assets by the service itself",
                "operationId": "docs",
                "responses": {"200": {"description": "HTML page", "content": {"text/html": {"schema": {}}}}},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "orders-svc",
            "version": __version__,
            "description": "Orders API. Every non-2xx body is {code, message, details?}. Stale If-Match is "
            "409 conflict (not 412), by contract.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>orders-svc API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui", validatorUrl: null});</script>
</body></html>"""


def docs_page() -> HTMLResponse:
    return HTMLResponse(DOCS_HTML)
