"""/orders: create, list, get, confirm, close, cancel."""

import uuid
from dataclasses import replace
from typing import Any

from msgspec import UNSET

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
from ..queries.orders import Target
from ..routing import Call, Handler, Operation
from ..schemas import CancelOrder, CloseOrder, ConfirmOrder, CreateOrder, Order, OrderPage, example_order
from ..states import OrderStatus
from ..usecases import orders
from ..writes import Reply

# What every write that reads a JSON body and an Idempotency-Key may answer besides its own refusals.
_BODY = (errors.BAD_JSON, BODY_TOO_LARGE, WRONG_SHAPE)
_KEYED = (errors.BAD_IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_REUSED, REQUEST_IN_PROGRESS)
_GUARDED = (errors.BAD_IF_MATCH, errors.IF_MATCH_TOO_LONG, ORDER_NOT_FOUND, STALE_VERSION, INVALID_TRANSITION)


async def create_order(call: Call) -> Reply:
    body: CreateOrder = call.body
    if body.tenant_id is not None and body.tenant_id != call.tenant:
        raise BODY_TENANT_MISMATCH.error()
    assert call.idem is not None  # required by the declaration
    if body.items is UNSET:
        return await orders.create_order(call.pool, call.tenant, call.idem)
    lines = [(item.product_id, item.quantity) for item in body.items]
    seen: set[uuid.UUID] = set()
    for product_id, _ in lines:
        if product_id in seen:
            raise errors.DUPLICATE_LINE.error(productId=str(product_id))
        seen.add(product_id)
    reservation = call.state.settings.reservation_ttl
    return await orders.create_order_with_items(call.pool, call.tenant, call.idem, lines, reservation)


async def list_orders(call: Call) -> bytes:
    params = call.request.query_params
    limit = parse_limit(params.get("limit"))
    cursor = params.get("cursor")
    after = decode_cursor(cursor) if cursor is not None else None
    return await orders.list_orders(call.pool, call.tenant, after, limit)


async def get_order(call: Call) -> Reply:
    return await orders.get_order(call.pool, call.tenant, call.ids["order_id"])


def target(call: Call) -> Target:
    return Target(call.tenant, call.ids["order_id"], call.versions)


async def order_exists(call: Call) -> None:
    await orders.require_order(call.pool, call.tenant, call.ids["order_id"])


async def confirm_order(call: Call) -> Reply:
    total = call.body.total_cents
    return await orders.confirm_order(call.pool, target(call), None if total is UNSET else total, call.idem)


async def close_order(call: Call) -> Reply:
    return await orders.close_order(call.pool, target(call), call.idem)


async def cancel_order(call: Call) -> Reply:
    return await orders.cancel_order(call.pool, target(call), call.body.reason, call.idem)


def order_change(path: str, operation_id: str, summary: str, handler: Handler, **declared: Any) -> Operation:
    """A guarded change of one order: If-Match optional unless declared, an optional Idempotency-Key."""
    declared.setdefault("if_match", "optional")
    declared["errors"] = (*_GUARDED, *_BODY, *_KEYED, *declared.get("errors", ()))
    method = declared.pop("method", "POST")
    return Operation(
        method, path, operation_id, summary, handler, response=Order, idempotency_key="optional", **declared
    )


CONFIRM = order_change(
    "/orders/{order_id}/confirm",
    "confirm_order",
    "Confirm a draft order with its total (optimistic locking)",
    confirm_order,
    method="PATCH",
    body=ConfirmOrder,
    body_required=True,
    if_match="required",
    exists=order_exists,
    errors=(
        errors.TOTAL_OUT_OF_RANGE,
        errors.IF_MATCH_REQUIRED,
        errors.TOTAL_REQUIRED,
        errors.TOTAL_MISMATCH,
    ),
    response_example=example_order(OrderStatus.CONFIRMED),
)

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
        errors=(
            *_BODY,
            *_KEYED,
            errors.IDEMPOTENCY_KEY_REQUIRED,
            BODY_TENANT_MISMATCH,
            errors.DUPLICATE_LINE,
            errors.UNKNOWN_PRODUCT,
            errors.PRODUCT_INACTIVE,
            errors.INSUFFICIENT_STOCK,
            errors.OUT_OF_RANGE,
        ),
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
    CONFIRM,
    replace(
        CONFIRM,
        path="/orders/{order_id}",
        operation_id="confirm_order_at_order_path",
        description="PATCH /orders/{order_id}/confirm at the order's own path (one fingerprint for both).",
        fingerprint_path=CONFIRM.path,
    ),
    order_change(
        "/orders/{order_id}/close",
        "close_order",
        "Close a confirmed or paid order and record its orders.closed event",
        close_order,
        body=CloseOrder,
        response_example=example_order(OrderStatus.CLOSED),
    ),
    order_change(
        "/orders/{order_id}/cancel",
        "cancel_order",
        "Cancel a draft or confirmed order and record its orders.cancelled event",
        cancel_order,
        body=CancelOrder,
        response_example=example_order(OrderStatus.CANCELLED),
    ),
)
