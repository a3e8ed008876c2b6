"""/orders/{id}/payments, /payments/{id}: a tenant's payments; /webhooks/payments: settlements."""

from typing import Any

from starlette.requests import Request

from .. import errors, signatures
from ..errors import BODY_TOO_LARGE, IDEMPOTENCY_KEY_REUSED, ORDER_NOT_FOUND, REQUEST_IN_PROGRESS, WRONG_SHAPE
from ..routing import Call, Operation
from ..schemas import OrderPayments, Payment, PaymentWebhook
from ..usecases import payments
from ..writes import Reply

_BODY = (errors.BAD_JSON, BODY_TOO_LARGE, WRONG_SHAPE)
_KEYED = (errors.BAD_IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_REUSED, REQUEST_IN_PROGRESS)
_SIGNATURE = (
    errors.WEBHOOK_HEADERS_MISSING,
    errors.WEBHOOK_TIMESTAMP_OUT_OF_TOLERANCE,
    errors.WEBHOOK_SIGNATURE_MISMATCH,
)


async def create_payment(call: Call) -> Reply:
    assert call.idem is not None  # required by the declaration
    return await payments.create_payment(call.pool, call.tenant, call.ids["order_id"], call.idem)


async def get_payment(call: Call) -> bytes:
    return await payments.get_payment(call.pool, call.tenant, call.ids["payment_id"])


async def list_order_payments(call: Call) -> bytes:
    return await payments.list_order_payments(call.pool, call.tenant, call.ids["order_id"])


def verify_signature(request: Request, body: bytes) -> None:
    """The Standard Webhooks signature of the raw body, with any of the configured secrets (401 otherwise)."""
    keys = request.app.state.settings.webhook_secrets or ()
    signatures.verify(request.headers, body, keys)


async def receive_payment_webhook(call: Call) -> Reply:
    delivery_id = call.request.headers["webhook-id"]  # verified with the signature
    return await payments.settle_payment(call.pool, delivery_id, call.body)


def _webhook_header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


WEBHOOK_HEADERS = (
    _webhook_header("webhook-id", "The delivery's id, the same on each retry of it: processed once"),
    _webhook_header("webhook-timestamp", "Unix seconds of this attempt; refused more than 300 s from now"),
    _webhook_header(
        "webhook-signature",
        "Space-separated `v1,<base64 HMAC-SHA256 of {webhook-id}.{webhook-timestamp}.{body}>` entries; "
        "one matching any secret of ORDERS_WEBHOOK_SECRETS is enough",
    ),
)

OPERATIONS = (
    Operation(
        "POST",
        "/orders/{order_id}/payments",
        "create_payment",
        "Ask for the payment of a confirmed order (idempotent); the provider is asked through the outbox",
        create_payment,
        response=Payment,
        status=201,
        idempotency_key="required",
        location="/payments",
        description="The body, if any, is not read. The payment is pending until the provider's webhook "
        "settles it; success makes the order paid, failure cancels it and gives its stock back.",
        errors=(
            ORDER_NOT_FOUND,
            errors.INVALID_TRANSITION,
            errors.PAYMENT_EXISTS,
            errors.IDEMPOTENCY_KEY_REQUIRED,
            *_KEYED,
        ),
    ),
    Operation(
        "GET",
        "/orders/{order_id}/payments",
        "list_order_payments",
        "The order's payments, newest first",
        list_order_payments,
        response=OrderPayments,
        errors=(ORDER_NOT_FOUND,),
    ),
    Operation(
        "GET",
        "/payments/{payment_id}",
        "get_payment",
        "Get one payment",
        get_payment,
        response=Payment,
        errors=(errors.PAYMENT_NOT_FOUND,),
    ),
    Operation(
        "POST",
        "/webhooks/payments",
        "receive_payment_webhook",
        "The payment provider settles a payment (Standard Webhooks signature; no tenant headers)",
        receive_payment_webhook,
        body=PaymentWebhook,
        body_required=True,
        response=Payment,
        tenant=False,
        verify=verify_signature,
        query=WEBHOOK_HEADERS,
        description="Answers the payment as settled. The same webhook-id again gets the first answer and "
        "changes nothing; a refused delivery changes nothing.",
        errors=(
            *_SIGNATURE,
            *_BODY,
            errors.AMOUNT_MISMATCH,
            errors.PAYMENT_NOT_FOUND,
            errors.PAYMENT_SETTLED,
            REQUEST_IN_PROGRESS,
            errors.INTERNAL,
            errors.UNAVAILABLE,
            errors.POOL_EXHAUSTED,
            errors.LOCK_UNAVAILABLE,
            errors.SCHEMA_NOT_MIGRATED,
        ),
    ),
)
