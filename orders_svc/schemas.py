"""Request and response types: the handlers decode and encode with these; /openapi.json is built from them."""

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from .states import OrderStatus

TENANT_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"

TenantId = Annotated[str, Meta(pattern=TENANT_PATTERN, description="1-64 chars of [A-Za-z0-9._:-]")]
Cents = Annotated[
    int,
    Meta(ge=0, le=2**31 - 1, description="Amount in cents, written as an integer literal: 100.0 is refused"),
]
Timestamp = Annotated[
    str,
    Meta(
        extra_json_schema={"format": "date-time"},
        description="RFC 3339 UTC with microseconds, e.g. 2026-11-22T03:50:10.123456Z",
    ),
]


# PostgreSQL's text holds no NUL character: text stored from a request refuses it up front (422, not 500).
NO_NUL = "^[^\x00]*$"


class Base(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """Shared settings: camelCase on the wire, unknown fields refused."""


class LineItem(Base):
    product_id: uuid.UUID
    quantity: Annotated[int, Meta(ge=1, le=1000)]


class CreateOrder(Base, omit_defaults=True):
    tenant_id: TenantId | None = None
    items: (
        Annotated[
            list[LineItem],
            Meta(
                min_length=1,
                max_length=50,
                description="1-50 lines, each product at most once; stock reserved",
            ),
        ]
        | UnsetType
    ) = UNSET


class ConfirmOrder(Base):
    total_cents: (
        Annotated[
            Cents, Meta(description="Required for an order without items; for one with items, its total")
        ]
        | UnsetType
    ) = UNSET


class CloseOrder(Base):
    """Close takes no fields; an empty body or `{}`."""


class CancelOrder(Base, omit_defaults=True):
    """An empty body, `{}`, or a reason that the orders.cancelled event carries."""

    reason: Annotated[str, Meta(max_length=200, pattern=NO_NUL)] | None = None


class Order(Base):
    id: uuid.UUID
    tenant_id: str
    status: OrderStatus
    version: Annotated[int, Meta(ge=1)]
    total_cents: Cents | None
    created_at: Timestamp
    updated_at: Timestamp
    # Only orders created with items have these two keys.
    items: list["OrderItem"] | UnsetType = UNSET
    reserved_until: Timestamp | UnsetType = UNSET


class OrderItem(Base):
    product_id: uuid.UUID
    sku: str
    name: str
    unit_price_cents: Cents
    quantity: int
    line_total_cents: Cents


class OrderPage(Base):
    items: list[Order]
    next_cursor: Annotated[str, Meta(description="Opaque; pass back as ?cursor=")] | None


SKU_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
_SKU = re.compile(SKU_PATTERN)
Sku = Annotated[str, Meta(pattern=SKU_PATTERN, description="1-64 chars of [A-Za-z0-9._-], unique per tenant")]
ProductName = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]
Quantity = Annotated[int, Meta(ge=0, le=2**31 - 1, description="An integer from 0 to 2147483647")]
Delta = Annotated[
    int,
    Meta(
        ge=-(2**63),
        le=2**63 - 1,
        description="Added to the stock; not 0. A result below 0 is a 409, above 2147483647 a 422",
        extra_json_schema={"not": {"const": 0}},
    ),
]


class CreateProduct(Base):
    sku: Sku
    name: ProductName
    price_cents: Cents
    stock: Quantity = 0
    active: bool = True

    def __post_init__(self) -> None:
        if not _SKU.fullmatch(self.sku):  # the pattern's `$` would let a trailing newline through
            raise ValueError("sku must be 1-64 characters of [A-Za-z0-9._-]")


class UpdateProduct(Base):
    """At least one field; the others keep their value."""

    name: ProductName | UnsetType = UNSET
    price_cents: Cents | UnsetType = UNSET
    active: bool | UnsetType = UNSET

    def __post_init__(self) -> None:
        if self.name is UNSET and self.price_cents is UNSET and self.active is UNSET:
            raise ValueError("send at least one of name, priceCents, active")


class StockChange(Base):
    delta: Delta

    def __post_init__(self) -> None:
        if self.delta == 0:
            raise ValueError("delta must not be 0")


class Product(Base):
    id: uuid.UUID
    tenant_id: str
    sku: str
    name: str
    price_cents: Cents
    stock: Quantity
    active: bool
    version: Annotated[int, Meta(ge=1)]
    created_at: Timestamp
    updated_at: Timestamp


class ProductPage(Base):
    items: list[Product]
    next_cursor: Annotated[str, Meta(description="Opaque; pass back as ?cursor=")] | None


PaymentStatus = Literal["pending", "succeeded", "failed"]
FailureReason = Annotated[str, Meta(max_length=200, pattern=NO_NUL)]


class Payment(Base):
    id: uuid.UUID
    order_id: uuid.UUID
    tenant_id: str
    amount_cents: Annotated[int, Meta(ge=1, le=2**31 - 1)]
    status: PaymentStatus
    failure_reason: str | None
    created_at: Timestamp
    updated_at: Timestamp


class OrderPayments(Base):
    """An order's payments, newest first (at most one is pending or succeeded)."""

    items: list[Payment]


class SettlementData(msgspec.Struct, rename="camel"):
    payment_id: uuid.UUID
    amount_cents: Annotated[Cents, Meta(description="The amount settled; must be the payment's")]
    failure_reason: FailureReason | None = None


class PaymentWebhook(msgspec.Struct, rename="camel"):
    """A provider's settlement. Fields this service does not read (a `timestamp`, say) are let through: the
    provider's payload may grow without its deliveries being refused."""

    type: Literal["payment.succeeded", "payment.failed"]
    data: SettlementData


class Error(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    details: dict[str, Any] | None = None


class Health(msgspec.Struct):
    status: str


_encode_timestamp = msgspec.json.Encoder().encode


def rfc3339(ts: datetime) -> str:
    """UTC with exactly six fractional digits: the precision the database keeps and cursors need."""
    if ts.tzinfo is not UTC:  # asyncpg hands back UTC already (the session's timezone)
        ts = ts.astimezone(UTC)
    # msgspec writes RFC 3339 in C (four-digit year, "Z" for UTC) several times faster than isoformat, which
    # shows on a page of ten orders; it only leaves the fraction out when it is zero.
    text = _encode_timestamp(ts)[1:-1].decode()
    return text if ts.microsecond else text[:-1] + ".000000Z"


encoder = msgspec.json.Encoder()


# ------------------------------------------------------------------------------------------- examples
# /openapi.json's examples, as instances of the wire types: they are encoded like any response, so they cannot
# drift from the schemas (tests/test_openapi_document.py validates each against its schema too).
EXAMPLE_TENANT = "acme"
EXAMPLE_ORDER_ID = uuid.UUID("0195f2c4-7a3e-7c1d-9b4e-2f6a8d1c3e5b")
EXAMPLE_PRODUCT_ID = uuid.UUID("0195f2b9-1c4d-7a2e-9f3b-5d6e7f8a9b0c")
_CREATED_AT = "2026-11-22T03:50:10.123456Z"
# The step each status is reached at: version 1 is the draft, each change adds one.
_STEPS = {
    OrderStatus.DRAFT: (1, None, None),
    OrderStatus.CONFIRMED: (2, 4999, "2026-11-22T03:51:02.654321Z"),
    OrderStatus.PAID: (3, 4999, "2026-11-22T03:52:17.204816Z"),
    OrderStatus.CLOSED: (3, 4999, "2026-11-22T04:02:45.000918Z"),
    OrderStatus.CANCELLED: (3, 4999, "2026-11-22T04:02:45.000918Z"),
}


def example_order(
    status: OrderStatus = OrderStatus.DRAFT,
    order_id: uuid.UUID = EXAMPLE_ORDER_ID,
    created_at: str = _CREATED_AT,
) -> Order:
    version, total, updated_at = _STEPS[status]
    return Order(order_id, EXAMPLE_TENANT, status, version, total, created_at, updated_at or created_at)


_EXAMPLE_PRODUCT = Product(
    EXAMPLE_PRODUCT_ID, EXAMPLE_TENANT, "mug-blue", "Blue mug", 1250, 40, True, 1, _CREATED_AT, _CREATED_AT
)

_EXAMPLE_PAYMENT = Payment(
    uuid.UUID("0195f2c5-0a1b-7c2d-8e3f-4a5b6c7d8e9f"),
    EXAMPLE_ORDER_ID,
    EXAMPLE_TENANT,
    4999,
    "pending",
    None,
    "2026-11-22T03:51:30.000412Z",
    "2026-11-22T03:51:30.000412Z",
)

EXAMPLES: dict[type, msgspec.Struct] = {
    CreateOrder: CreateOrder(tenant_id=EXAMPLE_TENANT),
    ConfirmOrder: ConfirmOrder(total_cents=4999),
    CloseOrder: CloseOrder(),
    CancelOrder: CancelOrder(reason="the customer changed their mind"),
    Order: example_order(),
    OrderPage: OrderPage(
        items=[
            example_order(OrderStatus.CONFIRMED),
            example_order(
                order_id=uuid.UUID("0195f2c4-6b1d-7e2a-8c3f-4d5e6f7a8b9c"),
                created_at="2026-11-22T03:49:58.123456Z",
            ),
        ],
        # Opaque to clients: the last item's (createdAt, id), as the service encodes it.
        next_cursor="eyJ0cyI6IjIwMjYtMTEtMjJUMDM6NDk6NTguMTIzNDU2WiIsImlkIjoiMDE5NWYyYzQtNmIxZC03ZTJhLThjM2Yt"
        "NGQ1ZTZmN2E4YjljIn0",
    ),
    Health: Health(status="ok"),
    CreateProduct: CreateProduct(sku="mug-blue", name="Blue mug", price_cents=1250, stock=40),
    UpdateProduct: UpdateProduct(price_cents=1190),
    StockChange: StockChange(delta=25),
    Product: _EXAMPLE_PRODUCT,
    ProductPage: ProductPage(items=[_EXAMPLE_PRODUCT], next_cursor=None),
    Payment: _EXAMPLE_PAYMENT,
    OrderPayments: OrderPayments(items=[_EXAMPLE_PAYMENT]),
    PaymentWebhook: PaymentWebhook(
        type="payment.succeeded", data=SettlementData(payment_id=_EXAMPLE_PAYMENT.id, amount_cents=4999)
    ),
}
