"""Opaque keyset cursors: base64url of `{"ts": "<µs timestamp>", "id": "<uuid>"}` of the last item served."""

import base64
import binascii
import uuid
from datetime import UTC, datetime

import msgspec

from . import errors
from .schemas import rfc3339

DEFAULT_LIMIT = 10
MAX_LIMIT = 100


class Cursor(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    ts: str
    id: uuid.UUID


_decode_cursor = msgspec.json.Decoder(Cursor).decode
_encode = msgspec.json.Encoder().encode


def encode_cursor(created_at: datetime, order_id: uuid.UUID) -> str:
    raw = _encode(Cursor(ts=rfc3339(created_at), id=order_id))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The keyset position in a cursor; anything that is not one we could have issued is a 400."""
    try:
        if len(cursor) > 200:
            raise ValueError("too long")
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded, altchars=b"-_", validate=True)
        decoded = _decode_cursor(raw)
        ts = datetime.fromisoformat(decoded.ts)
        if ts.utcoffset() is None:
            raise ValueError("timestamp without offset")
        ts = ts.astimezone(UTC)  # the database binds it in UTC; an offset may push it out of range
    except (ValueError, OverflowError, binascii.Error, msgspec.DecodeError):
        raise errors.BAD_CURSOR.error() from None
    return ts, decoded.id


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise errors.BAD_LIMIT.error(high=MAX_LIMIT)
    return int(raw)


# The query parameters, as the OpenAPI document declares them.
LIMIT_PARAM = {
    "name": "limit",
    "in": "query",
    "description": f"Page size, 1-{MAX_LIMIT}",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
}
CURSOR_PARAM = {
    "name": "cursor",
    "in": "query",
    "description": "nextCursor of the previous page, passed back unchanged",
    "schema": {"type": "string", "format": "keyset-cursor", "maxLength": 200},
}
