"""The one write path: every write endpoint hands its change to `perform`, which owns the Idempotency-Key.

In the manner of an atomic phase: with a key, claiming it, the change and storing its response commit together
or not at all, so a refused or failed write leaves the key unused; a retry with a live key only reads (the
claim leaves an existing key untouched) and gets the stored response; a key found expired is removed and
claimed again in the same transaction. Waits behind a concurrent holder of the key or row are bounded by the
session's lock_timeout (409 request_in_progress past it). Without a key the change runs alone: one guarded
statement in autocommit (what it reads after a miss, to say why, reads a newer snapshot), or a transaction
when it writes with more than one.
"""

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import NamedTuple

from . import errors
from .db import Connection, Pool, connection, transaction
from .observability.metrics import idempotency as outcome
from .queries import idempotency
from .queries.idempotency import StoredResponse


class Reply(NamedTuple):
    status: int
    body: bytes
    headers: dict[str, str]
    replayed: bool = False


class Idempotency(NamedTuple):
    key: str
    fingerprint: bytes
    ttl: timedelta


Change = Callable[[Connection], Awaitable[Reply]]
# A change that claims the key and stores its response in one statement it has run for it, on a connection of
# its own (an order with items: Database.batched): None when the key exists, and nothing was written.
PlacedChange = Callable[[Idempotency], Awaitable[Reply | None]]
# A change that claims the key and stores its own response in the same single statement (the create fast
# path): None when the key exists, and nothing was written.
FusedChange = Callable[[Connection, Idempotency], Awaitable[Reply | None]]

# Claims of one request: the first; a second after removing the key found expired; a third should another
# request have removed it and its claim vanished too (purged) in between. Past that: retry later.
_CLAIMS = 3


async def perform(
    pool: Pool,
    tenant: str,
    idem: Idempotency | None,
    change: Change | None = None,
    *,
    fused: FusedChange | None = None,
    atomic: bool = False,
    placed: PlacedChange | None = None,
) -> Reply:
    """Run `change` once for this request, however often the client sends it with the same key. A change of
    more than one statement is `atomic`: it runs in a transaction also without a key. A `placed` change is a
    fused one that needs no connection from here: one is taken only to replay."""
    if idem is None:
        assert change is not None, "a write that can run without a key needs a change of its own"
        async with transaction(pool) if atomic else connection(pool) as conn:
            return await change(conn)
    if placed is not None:
        async with pool.queued():  # one request at a time per key, as the scopes below would queue it
            for _ in range(_CLAIMS):
                reply = await placed(idem)
                if reply is not None:
                    outcome("created")
                    return reply
                async with connection(pool) as conn:
                    if (replayed := await _after_miss(conn, tenant, idem)) is not None:
                        return replayed
        outcome("in_progress")
        raise errors.REQUEST_IN_PROGRESS.error()
    # The fused change is one statement: autocommit is its transaction.
    async with connection(pool) if fused is not None else transaction(pool) as conn:
        for _ in range(_CLAIMS):
            if fused is not None:
                reply = await fused(conn, idem)
            elif await idempotency.claim_key(conn, tenant, idem.key, idem.fingerprint, idem.ttl):
                assert change is not None
                reply = await change(conn)
                await idempotency.store_response(
                    conn, tenant, idem.key, reply.status, reply.headers, reply.body
                )
            else:
                reply = None
            if reply is not None:
                outcome("created")
                return reply
            if (replayed := await _after_miss(conn, tenant, idem)) is not None:
                return replayed
    outcome("in_progress")
    raise errors.REQUEST_IN_PROGRESS.error()


async def _after_miss(conn: Connection, tenant: str, idem: Idempotency) -> Reply | None:
    """After a claim found the key: its stored answer, or None when it had expired (removed here: claim
    again)."""
    stored = await idempotency.select_key(conn, tenant, idem.key)
    if stored is not None:
        return replay(stored, idem.fingerprint)
    await idempotency.drop_expired_key(conn, tenant, idem.key)
    return None


def replay(stored: StoredResponse, fingerprint: bytes) -> Reply:
    """The stored answer for a retried request."""
    if stored.fingerprint != fingerprint:
        outcome("reused")
        raise errors.IDEMPOTENCY_KEY_REUSED.error()
    if stored.status is None or stored.body is None:  # claimed, response not stored: not committed yet
        outcome("in_progress")
        raise errors.REQUEST_IN_PROGRESS.error()
    outcome("replayed")
    return Reply(200, stored.body, stored.headers or {}, replayed=True)
