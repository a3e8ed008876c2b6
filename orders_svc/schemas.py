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
