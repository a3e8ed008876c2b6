"""sql/idempotency.sql: claiming an Idempotency-Key, reading and storing its response."""

from datetime import datetime, timedelta
from typing import NamedTuple

from ..db import Connection
from . import deleted, statement

SELECT_IDEMPOTENCY_KEY = statement("select_idempotency_key")
CLAIM_IDEMPOTENCY_KEY = statement("claim_idempotency_key")
DROP_EXPIRED_IDEMPOTENCY_KEY = statement("drop_expired_idempotency_key")
STORE_IDEMPOTENT_RESPONSE = statement("store_idempotent_response")
PURGE_EXPIRED_IDEMPOTENCY_KEYS = statement("purge_expired_idempotency_keys")
SELECT_IDEMPOTENCY_KEY_RECORD = statement("select_idempotency_key_record")
FORGET_IDEMPOTENCY_KEY = statement("forget_idempotency_key")


class StoredResponse(NamedTuple):
    fingerprint: bytes
    status: int | None
    headers: dict[str, str] | None
    body: bytes | None


class KeyRecord(NamedTuple):
    """A stored key as an operator sees it."""

    created_at: datetime
    expires_at: datetime
    expired: bool
    status: int | None  # None: the first request with the key is still in progress
    body: bytes | None


async def select_key(conn: Connection, tenant_id: str, key: str) -> StoredResponse | None:
    row = await conn.fetchrow(SELECT_IDEMPOTENCY_KEY, tenant_id, key)
    return None if row is None else StoredResponse(*row)


async def claim_key(conn: Connection, tenant_id: str, key: str, fingerprint: bytes, ttl: timedelta) -> bool:
    """Claim a new key for this transaction; False when it exists (nothing was written then)."""
    return await conn.fetchrow(CLAIM_IDEMPOTENCY_KEY, tenant_id, key, fingerprint, ttl) is not None


async def drop_expired_key(conn: Connection, tenant_id: str, key: str) -> None:
    await conn.execute(DROP_EXPIRED_IDEMPOTENCY_KEY, tenant_id, key)


async def store_response(
    conn: Connection, tenant_id: str, key: str, status: int, headers: dict[str, str], body: bytes
) -> None:
    await conn.execute(STORE_IDEMPOTENT_RESPONSE, tenant_id, key, status, headers, body)


async def purge_expired_idempotency_keys(conn: Connection, limit: int) -> int:
    return deleted(await conn.execute(PURGE_EXPIRED_IDEMPOTENCY_KEYS, limit))


async def select_key_record(conn: Connection, tenant_id: str, key: str) -> KeyRecord | None:
    row = await conn.fetchrow(SELECT_IDEMPOTENCY_KEY_RECORD, tenant_id, key)
    return None if row is None else KeyRecord(*row)


async def forget_key(conn: Connection, tenant_id: str, key: str) -> datetime | None:
    """Delete the key; its created_at, or None when the tenant had no such key."""
    found: datetime | None = await conn.fetchval(FORGET_IDEMPOTENCY_KEY, tenant_id, key)
    return found
