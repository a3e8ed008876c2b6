"""Housekeeping: expired idempotency keys and long-published outbox rows go, in batches; nothing else does."""

import os
import subprocess
import sys
import uuid
from datetime import timedelta

import asyncpg
import httpx

from orders_svc.housekeeping import Purged, purge

from conftest import test_settings as settings_for
from helpers import close, confirmed_id, create


async def created_keys(client: httpx.AsyncClient, tenant: str, count: int) -> list[str]:
    keys = [f"key-{uuid.uuid4().hex}" for _ in range(count)]
    for key in keys:
        assert (await create(client, tenant, key)).status_code == 201
    return keys


async def closed_events(
    client: httpx.AsyncClient, db: asyncpg.Pool, tenant: str, count: int
) -> list[uuid.UUID]:
    events = []
    for _ in range(count):
        order_id = await confirmed_id(client, tenant)
        assert (await close(client, tenant, order_id)).status_code == 200
        events.append(await db.fetchval("SELECT id FROM outbox WHERE order_id = $1", uuid.UUID(order_id)))
    return events


async def expire_keys(db: asyncpg.Pool, tenant: str, keys: list[str]) -> None:
    await db.execute(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' "
        "WHERE tenant_id = $1 AND key = ANY($2)",
        tenant,
        keys,
    )


# Pretend time has passed: the events were created (and published or dead-lettered) long ago.
AGE_EVENTS = {
    "published": "UPDATE outbox SET created_at = now() - $2::interval, published_at = now() - $2::interval "
    "WHERE id = ANY($1)",
    "dead": "UPDATE outbox SET created_at = now() - $2::interval, dead_at = now() - $2::interval "
    "WHERE id = ANY($1)",
    "unpublished": "UPDATE outbox SET created_at = now() - $2::interval WHERE id = ANY($1)",
}


async def age_events(db: asyncpg.Pool, events: list[uuid.UUID], state: str, age: timedelta) -> None:
    await db.execute(AGE_EVENTS[state], events, age)


async def test_purge_deletes_only_expired_keys_and_old_published_events_in_batches(
    fresh_client, fresh_db, fresh_database_url, tenant
):
    expired = await created_keys(fresh_client, tenant, 5)
    await expire_keys(fresh_db, tenant, expired)
    events = await closed_events(fresh_client, fresh_db, tenant, 8)  # each leaves its create key, live
    old_published, recent_published, old_unpublished, old_dead = (
        events[:5],
        events[5:6],
        events[6:7],
        events[7:],
    )
    await age_events(fresh_db, old_published, "published", timedelta(hours=200))
    await age_events(fresh_db, recent_published, "published", timedelta(hours=1))
    await age_events(fresh_db, old_unpublished, "unpublished", timedelta(hours=400))
    await age_events(fresh_db, old_dead, "dead", timedelta(hours=400))
    live_keys = {
        r["key"] for r in await fresh_db.fetch("SELECT key FROM idempotency_keys WHERE expires_at > now()")
    }
    assert len(live_keys) == 8

    settings = settings_for(fresh_database_url, purge_batch_size=2, outbox_retention=timedelta(hours=168))
    assert await purge(fresh_db, settings) == Purged(idempotency_keys=5, outbox_events=5)

    assert {r["key"] for r in await fresh_db.fetch("SELECT key FROM idempotency_keys")} == live_keys
    remaining = {r["id"] for r in await fresh_db.fetch("SELECT id FROM outbox")}
    assert remaining == {*recent_published, *old_unpublished, *old_dead}
    assert await purge(fresh_db, settings) == Purged(0, 0)


async def test_purge_command_prints_what_it_deleted(fresh_client, fresh_db, fresh_database_url, tenant):
    await expire_keys(fresh_db, tenant, await created_keys(fresh_client, tenant, 3))
    await age_events(
        fresh_db, await closed_events(fresh_client, fresh_db, tenant, 2), "published", timedelta(hours=3)
    )
    env = {
        **os.environ,
        "DATABASE_URL": fresh_database_url,
        "ORDERS_OUTBOX_RETENTION_HOURS": "2",
        "ORDERS_PURGE_BATCH_SIZE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "orders_svc.cli", "purge"], env=env, capture_output=True, check=True
    )
    assert result.stdout.decode().strip() == (
        "purged 3 expired idempotency keys, 2 published outbox events and 0 webhook delivery ids; "
        "cancelled 0 orders whose reservation ran out"
    )
    assert await fresh_db.fetchval("SELECT count(*) FROM outbox") == 0
