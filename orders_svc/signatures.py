"""Standard Webhooks signatures (HMAC-SHA256, `v1`): verifying the provider's deliveries, signing the fake
provider's.

The signed content is `{webhook-id}.{webhook-timestamp}.{raw body}`; `webhook-signature` is a space-separated
list of `<version>,<base64>` entries, any `v1` one matching a configured secret is enough (several secrets at
once: rotation). Secrets are `whsec_` + base64 of 24-64 bytes. Written here rather than taken from the
`standardwebhooks` package: its `verify` raises ValueError or binascii.Error on a malformed entry, decodes the
body as UTF-8 text before signing it, takes one secret per object and decodes secrets leniently (invalid
characters dropped); what is needed is these few lines, checked against the specification's test vector.
"""

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence

from . import errors

PREFIX = "whsec_"
TOLERANCE_SECONDS = 300
_ID = re.compile(r"[!-~]{1,255}")  # visible ASCII: no spaces or control characters
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class BadSecret(ValueError):
    """A configured secret that is not `whsec_` + base64 of 24-64 bytes."""


def decode_secret(secret: str) -> bytes:
    if not secret.startswith(PREFIX):
        raise BadSecret("a secret must start with whsec_")
    try:
        key = base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except binascii.Error:
        raise BadSecret("the part after whsec_ must be base64") from None
    if not 24 <= len(key) <= 64:
        raise BadSecret("a secret must be base64 of 24 to 64 bytes")
    return key


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` entry for `webhook-signature`."""
    content = b"%s.%d.%s" % (webhook_id.encode(), timestamp, body)
    return "v1," + base64.b64encode(hmac.digest(key, content, hashlib.sha256)).decode()


def sign(key: bytes, webhook_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The three headers of a delivery of `body`, signed now."""
    timestamp = int(time.time() if now is None else now)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, webhook_id, timestamp, body),
    }


def verify(headers: Mapping[str, str], body: bytes, keys: Sequence[bytes], now: float | None = None) -> str:
    """The delivery's `webhook-id` once its headers, timestamp and signature pass; else a 401 from the
    catalogue. Every configured key is tried, each comparison in constant time."""
    webhook_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if (
        webhook_id is None
        or timestamp is None
        or not signatures
        or not _ID.fullmatch(webhook_id)
        or not _TIMESTAMP.fullmatch(timestamp)
    ):
        raise errors.WEBHOOK_HEADERS_MISSING.error()
    if abs((time.time() if now is None else now) - int(timestamp)) > TOLERANCE_SECONDS:
        raise errors.WEBHOOK_TIMESTAMP_OUT_OF_TOLERANCE.error()
    sent = [_decoded(entry) for entry in signatures.split(" ")]
    content = b"%s.%s.%s" % (webhook_id.encode(), timestamp.encode(), body)
    matched = False
    for key in keys:
        expected = hmac.digest(key, content, hashlib.sha256)
        for candidate in sent:
            # Every entry is compared (no early exit), so the time taken says nothing about which matched.
            matched |= candidate is not None and hmac.compare_digest(expected, candidate)
    if not matched:
        raise errors.WEBHOOK_SIGNATURE_MISMATCH.error()
    return webhook_id


def _decoded(entry: str) -> bytes | None:
    """The signature bytes of a `v1,<base64>` entry; None for another version or a malformed entry."""
    version, comma, encoded = entry.partition(",")
    if version != "v1" or not comma:
        return None
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        return None
