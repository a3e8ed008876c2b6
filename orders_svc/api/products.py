"""/products: the catalogue. Reads are open to the tenant; writes need the admin role."""

from typing import TypeVar

from msgspec import UNSET, UnsetType

from .. import errors
from ..errors import (
    BODY_TOO_LARGE,
    IDEMPOTENCY_KEY_REUSED,
    PRODUCT_NOT_FOUND,
    REQUEST_IN_PROGRESS,
    STALE_VERSION,
    WRONG_SHAPE,
)
from ..pagination import CURSOR_PARAM, LIMIT_PARAM, decode_cursor, parse_limit
from ..queries.products import Changes, NewProduct, Target
from ..routing import Call, Operation
from ..schemas import CreateProduct, Product, ProductPage, StockChange, UpdateProduct
from ..usecases import products
from ..writes import Reply

ADMIN = ("admin",)
_BODY = (errors.BAD_JSON, BODY_TOO_LARGE, WRONG_SHAPE)
_KEYED = (errors.BAD_IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_REUSED, REQUEST_IN_PROGRESS)
_ACTIVE = {"true": True, "false": False}
T = TypeVar("T")

ACTIVE_PARAM = {
    "name": "active",
    "in": "query",
    "description": "Only active (true) or inactive (false) products; both when absent",
    "schema": {"type": "string", "enum": list(_ACTIVE)},
}


async def create_product(call: Call) -> Reply:
    body: CreateProduct = call.body
    new = NewProduct(body.sku, body.name, body.price_cents, body.stock, body.active)
    assert call.idem is not None  # required by the declaration
    return await products.create_product(call.pool, call.tenant, new, call.idem)


async def list_products(call: Call) -> bytes:
    params = call.request.query_params
    limit = parse_limit(params.get("limit"))
    cursor = params.get("cursor")
    after = decode_cursor(cursor) if cursor is not None else None
    active = params.get("active")
    if active is not None and active not in _ACTIVE:
        raise errors.BAD_ACTIVE.error()
    return await products.list_products(call.pool, call.tenant, _ACTIVE.get(active or ""), after, limit)


async def get_product(call: Call) -> Reply:
    return await products.get_product(call.pool, call.tenant, call.ids["product_id"])


async def product_exists(call: Call) -> None:
    await products.require_product(call.pool, call.tenant, call.ids["product_id"])


async def update_product(call: Call) -> Reply:
    product_id = call.ids["product_id"]
    body: UpdateProduct = call.body
    changes = Changes(_given(body.name), _given(body.price_cents), _given(body.active))
    target = Target(call.tenant, product_id, call.versions)
    return await products.update_product(call.pool, target, changes, call.idem)


def _given(value: T | UnsetType) -> T | None:
    return None if value is UNSET else value


async def change_stock(call: Call) -> Reply:
    assert call.idem is not None  # required by the declaration
    delta = call.body.delta
    return await products.change_stock(call.pool, call.tenant, call.ids["product_id"], delta, call.idem)


OPERATIONS = (
    Operation(
        "POST",
        "/products",
        "create_product",
        "Create a product (idempotent)",
        create_product,
        body=CreateProduct,
        body_required=True,
        response=Product,
        status=201,
        idempotency_key="required",
        roles=ADMIN,
        errors=(*_BODY, *_KEYED, errors.IDEMPOTENCY_KEY_REQUIRED, errors.SKU_TAKEN),
    ),
    Operation(
        "GET",
        "/products",
        "list_products",
        "List products, newest first (keyset pagination), optionally only active or inactive ones",
        list_products,
        response=ProductPage,
        query=(LIMIT_PARAM, CURSOR_PARAM, ACTIVE_PARAM),
        errors=(errors.BAD_LIMIT, errors.BAD_CURSOR, errors.BAD_ACTIVE),
    ),
    Operation(
        "GET",
        "/products/{product_id}",
        "get_product",
        "Get one product",
        get_product,
        response=Product,
        errors=(PRODUCT_NOT_FOUND,),
    ),
    Operation(
        "PATCH",
        "/products/{product_id}",
        "update_product",
        "Change a product's name, price or active flag (optimistic locking)",
        update_product,
        body=UpdateProduct,
        body_required=True,
        response=Product,
        if_match="required",
        exists=product_exists,
        idempotency_key="optional",
        roles=ADMIN,
        description="Prices already copied into orders never change.",
        errors=(
            errors.BAD_IF_MATCH,
            errors.IF_MATCH_TOO_LONG,
            PRODUCT_NOT_FOUND,
            STALE_VERSION,
            errors.IF_MATCH_REQUIRED,
            *_BODY,
            *_KEYED,
        ),
    ),
    Operation(
        "POST",
        "/products/{product_id}/stock",
        "change_stock",
        "Add to or take from a product's stock (idempotent: a retried change counts once)",
        change_stock,
        body=StockChange,
        body_required=True,
        response=Product,
        idempotency_key="required",
        roles=ADMIN,
        errors=(
            PRODUCT_NOT_FOUND,
            errors.INSUFFICIENT_STOCK,
            errors.OUT_OF_RANGE,
            errors.IDEMPOTENCY_KEY_REQUIRED,
            *_BODY,
            *_KEYED,
        ),
    ),
)
