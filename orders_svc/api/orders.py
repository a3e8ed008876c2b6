"""/orders: create, list, get, confirm, close, cancel."""

from .. import errors
from ..errors import (
    BODY_TENANT_MISMATCH,
    BODY_TOO_LARGE,
    IDEMPOTENCY_KEY_REUSED,
    INVALID_TRANSITION,
    ORDER_NOT_FOUND,
    REQUEST_IN_PROGRESS,
    STALE_VERSION,
    WRONG_SHAPE,
)
from ..pagination import CURSOR_PARAM, LIMIT_PARAM, decode_cursor, parse_limit
from ..routing import Call, Operation
from ..schemas import CancelOrder, CloseOrder, ConfirmOrder, CreateOrder, Order, OrderPage, example_order
from ..states import OrderStatus
from ..usecases import orders
from ..writes import Reply

# What every write that reads a JSON body and an Idempotency-Key may answer besides its own refusals.
_BODY = (errors.BAD_JSON, BODY_TOO_LARGE, WRONG_SHAPE)
_KEYED = (errors.BAD_IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_REUSED, REQUEST_IN_PROGRESS)
_GUARDED = (errors.BAD_IF_MATCH, ORDER_NOT_FOUND, STALE_VERSION, INVALID_TRANSITION)


async def create_order(call: Call) -> Reply:
    if call.body.tenant_id is not None and call.body.tenant_id != call.tenant:
        raise BODY_TENANT_MISMATCH.error()
    assert call.idem is not None  # required by the declaration
    return await orders.create_order(call.pool, call.tenant, call.idem)


async def list_orders(call: Call) -> bytes:
    params = call.request.query_params
    limit = parse_limit(params.get("limit"))
    cursor = params.get("cursor")
    after = decode_cursor(cursor) if cursor is not None else None
    return await orders.list_orders(call.pool, call.tenant, after, limit)


async def get_order(call: Call) -> Reply:
    return await orders.get_order(call.pool, call.tenant, call.ids["order_id"])


async def confirm_order(call: Call) -> Reply:
    order_id = call.ids["order_id"]
    if not call.if_match_sent:
        raise await orders.require_order(call.pool, call.tenant, order_id)
    total = call.body.total_cents
    return await orders.confirm_order(call.pool, call.tenant, order_id, call.versions, total, call.idem)


async def close_order(call: Call) -> Reply:
    return await orders.close_order(call.pool, call.tenant, call.ids["order_id"], call.versions, call.idem)


async def cancel_order(call: Call) -> Reply:
    order_id, reason = call.ids["order_id"], call.body.reason
    return await orders.cancel_order(call.pool, call.tenant, order_id, call.versions, reason, call.idem)


_CONFIRM = {
    "summary": "Confirm a draft order with its total (optimistic locking)",
    "handler": confirm_order,
    "body": ConfirmOrder,
    "body_required": True,
    "response": Order,
    "if_match": "required",
    "idempotency_key": "optional",
    "errors": (*_GUARDED, *_BODY, *_KEYED, errors.TOTAL_OUT_OF_RANGE, errors.IF_MATCH_REQUIRED),
    "fingerprint_path": "/orders/{order_id}/confirm",
    "response_example": example_order(OrderStatus.CONFIRMED),
}

OPERATIONS = (
    Operation(
        "POST",
        "/orders",
        "create_order",
        "Create a draft order (idempotent)",
        create_order,
        body=CreateOrder,
        response=Order,
        status=201,
        idempotency_key="required",
        errors=(*_BODY, *_KEYED, errors.IDEMPOTENCY_KEY_REQUIRED, BODY_TENANT_MISMATCH),
    ),
    Operation(
        "GET",
        "/orders",
        "list_orders",
        "List orders, newest first (keyset pagination)",
        list_orders,
        response=OrderPage,
        query=(LIMIT_PARAM, CURSOR_PARAM),
        errors=(errors.BAD_LIMIT, errors.BAD_CURSOR),
    ),
    Operation(
        "GET",
        "/orders/{order_id}",
        "get_order",
        "Get one order",
        get_order,
        response=Order,
        errors=(ORDER_NOT_FOUND,),
    ),
    Operation("PATCH", "/orders/{order_id}/confirm", "confirm_order", **_CONFIRM),  # type: ignore[arg-type]
    Operation(
        "PATCH",
        "/orders/{order_id}",
        "confirm_order_at_order_path",
        **_CONFIRM,  # type: ignore[arg-type]
        description="The same operation as PATCH /orders/{order_id}/confirm, at the order's own path.",
    ),
    Operation(
        "POST",
        "/orders/{order_id}/close",
        "close_order",
        "Close a confirmed order and record its orders.closed event",
        close_order,
        body=CloseOrder,
        response=Order,
        if_match="optional",
        idempotency_key="optional",
        errors=(*_GUARDED, *_BODY, *_KEYED),
        response_example=example_order(OrderStatus.CLOSED),
    ),
    Operation(
        "POST",
        "/orders/{order_id}/cancel",
        "cancel_order",
        "Cancel a draft or confirmed order and record its orders.cancelled event",
        cancel_order,
        body=CancelOrder,
        response=Order,
        if_match="optional",
        idempotency_key="optional",
        errors=(*_GUARDED, *_BODY, *_KEYED),
        response_example=example_order(OrderStatus.CANCELLED),
    ),
)
