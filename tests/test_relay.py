"""The outbox relay against a real PostgreSQL and a real NATS JetStream server."""

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import pytest
from nats_support import NatsServer, read_stream

from orders_svc.publishers import (
    STREAM,
    STREAM_SUBJECTS,
    LogPublisher,
    NatsPublisher,
    Publisher,
    nats_servers,
)
from orders_svc.queries.outbox import OutboxEvent
from orders_svc.relay import Relay, longest_retry, within_duplicate_window
from orders_svc.settings import Settings, SettingsError

from conftest import free_port
from conftest import test_settings as settings_for
from helpers import close, confirmed_id
from support import wait_for

ms = timedelta(milliseconds=1)

# Several events per order (the close path makes only one), with creation times shuffled against the versions,
# so that only the claim's per-order rule - not insertion order - can keep the versions in order.
INSERT_EVENTS = """
INSERT INTO outbox (id, event_type, order_id, order_version, tenant_id, payload, created_at)
SELECT gen_random_uuid(), 'orders.test.v' || v, o, v, $1,
       jsonb_build_object('orderId', o, 'version', v), now() - random() * interval '10 seconds'
FROM unnest($2::uuid[]) AS o, generate_series(1, $3) AS v
"""


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(free_port(), tmp_path / "jetstream", tmp_path / "nats.log")
    server.start()
    yield server
    server.stop()


def relay_settings(dsn: str, nats_url: str = "nats://127.0.0.1:1", **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "relay_batch_size": 10,
        "relay_poll_interval": 50 * ms,
        "relay_publish_timeout": 500 * ms,
        "relay_backoff_base": 10 * ms,
        "relay_backoff_cap": 100 * ms,
        **overrides,
    }
    return settings_for(dsn, **values)


class RecordingPublisher:
    """Delegates to another publisher and records each event it accepted (to catch relay-side duplicates)."""

    def __init__(self, inner: Publisher, accepted: list[uuid.UUID]) -> None:
        self.inner = inner
        self.accepted = accepted

    async def publish(self, event: OutboxEvent) -> None:
        await self.inner.publish(event)
        self.accepted.append(event.id)

    async def close(self) -> None:
        await self.inner.close()


class PoisonPublisher:
    """Refuses the events in `poisoned`, accepts (and records) the others."""

    def __init__(self, poisoned: set[uuid.UUID]) -> None:
        self.poisoned = poisoned
        self.accepted: list[OutboxEvent] = []

    async def publish(self, event: OutboxEvent) -> None:
        if event.id in self.poisoned:
            raise ConnectionError(f"broker refused {event.event_type}")
        self.accepted.append(event)

    async def close(self) -> None:
        return None


@asynccontextmanager
async def running(*relays: Relay) -> AsyncIterator[None]:
    """Relays running as tasks (each with its own connections); stopped gracefully, and must exit cleanly."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(relay.run(stop)) for relay in relays]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)


async def close_orders(client: httpx.AsyncClient, tenant: str, count: int) -> list[dict[str, Any]]:
    closed = []
    for total in range(count):
        order_id = await confirmed_id(client, tenant, total=100 + total)
        response = await close(client, tenant, order_id)
        assert response.status_code == 200, response.text
        closed.append(response.json())
    return closed


async def unpublished(db: asyncpg.Pool) -> int:
    return int(await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))


async def all_published(db: asyncpg.Pool) -> bool:
    return await unpublished(db) == 0


async def test_relay_publishes_each_closed_order_once_with_contract_payload_and_headers(
    fresh_client, fresh_db, fresh_database_url, nats_server, tenant
):
    closed = await close_orders(fresh_client, tenant, 5)
    settings = relay_settings(fresh_database_url, nats_server.url)
    publisher = await NatsPublisher.connect(nats_server.url, 1.0)
    async with running(Relay(settings, fresh_database_url, publisher)):
        await wait_for(lambda: all_published(fresh_db))
    await publisher.close()

    messages = await read_stream(nats_server.url)
    rows = {r["order_id"]: r for r in await fresh_db.fetch("SELECT * FROM outbox")}
    assert len(messages) == len(closed) == len(rows)
    by_order = {m.data["orderId"]: m for m in messages}
    for order in closed:
        message = by_order[order["id"]]
        row = rows[uuid.UUID(order["id"])]
        assert message.subject == "orders.closed"
        assert message.data == {
            "orderId": order["id"],
            "tenantId": tenant,
            "totalCents": order["totalCents"],
            "closedAt": order["updatedAt"],
        }
        assert message.headers == {
            "Nats-Msg-Id": str(row["id"]),
            "Nats-Expected-Stream": "ORDERS",
            "Orders-Event-Type": "orders.closed",
            "Orders-Tenant-Id": tenant,
        }
        assert row["published_at"] is not None and row["attempts"] == 0


async def test_a_close_wakes_an_idle_relay_through_notify_before_its_next_poll(
    fresh_client, fresh_db, fresh_database_url, tenant
):
    # The poll interval is far beyond the deadline below: only the NOTIFY from the close can wake the relay.
    publisher = PoisonPublisher(set())
    relay = Relay(
        relay_settings(fresh_database_url, relay_poll_interval=timedelta(minutes=10)),
        fresh_database_url,
        publisher,
    )
    async with running(relay):
        await wait_for(lambda: _listening(fresh_db))
        for round_ in range(3):
            await close_orders(fresh_client, tenant, 1)
            await wait_for(lambda n=round_ + 1: _published_count(fresh_db, n), timeout=10)
    assert len(publisher.accepted) == 3


async def test_relay_survives_losing_its_database_connections_and_carries_on(
    fresh_db, fresh_database_url, tenant
):
    publisher = PoisonPublisher(set())
    async with running(Relay(relay_settings(fresh_database_url), fresh_database_url, publisher)):
        await fresh_db.execute(INSERT_EVENTS, tenant, [uuid.uuid4()], 1)
        await wait_for(lambda: all_published(fresh_db))
        await wait_for(lambda: _listening(fresh_db))
        terminated = await fresh_db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND (application_name = 'orders-svc' OR query LIKE 'LISTEN %')"
        )
        assert terminated >= 2  # its pooled connection and its listener
        await fresh_db.execute(INSERT_EVENTS, tenant, [uuid.uuid4() for _ in range(5)], 1)
        await wait_for(lambda: all_published(fresh_db))
        await wait_for(lambda: _listening(fresh_db))  # and it listens again
    assert len(publisher.accepted) == 6


async def _listening(db: asyncpg.Pool) -> bool:
    # The relay's first (empty) claim has run and its listener is idle: it now waits for a wake-up.
    return bool(
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state = 'idle' AND query LIKE 'LISTEN %'"
        )
    )


async def _published_count(db: asyncpg.Pool, expected: int) -> bool:
    return await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL") == expected


async def test_three_relays_in_parallel_deliver_every_event_once_in_per_order_order(
    fresh_client, fresh_db, fresh_database_url, nats_server, tenant
):
    settings = relay_settings(fresh_database_url, nats_server.url, relay_batch_size=8)
    accepted: list[uuid.UUID] = []
    publishers = [await NatsPublisher.connect(nats_server.url, 1.0) for _ in range(3)]
    relays = [Relay(settings, fresh_database_url, RecordingPublisher(p, accepted)) for p in publishers]
    order_ids: list[uuid.UUID] = []
    async with running(*relays):
        for _ in range(3):  # rounds of events committed while the relays are busy
            batch = [uuid.uuid4() for _ in range(40)]
            order_ids += batch
            await fresh_db.execute(INSERT_EVENTS, tenant, batch, 3)
            closed = await close_orders(fresh_client, tenant, 3)
            order_ids += [uuid.UUID(order["id"]) for order in closed]
            await wait_for(lambda: all_published(fresh_db))
    for publisher in publishers:
        await publisher.close()

    event_ids = {r["id"] for r in await fresh_db.fetch("SELECT id FROM outbox")}
    assert len(event_ids) == 3 * (40 * 3 + 3)
    assert Counter(accepted) == Counter(event_ids)  # no event published twice, not even before the broker
    messages = await read_stream(nats_server.url)
    assert sorted(uuid.UUID(m.headers["Nats-Msg-Id"]) for m in messages) == sorted(event_ids)
    versions: dict[str, list[int]] = defaultdict(list)
    for message in messages:  # stream order
        if message.subject.startswith("orders.test."):
            versions[message.data["orderId"]].append(message.data["version"])
    assert len(versions) == 3 * 40
    assert all(v == [1, 2, 3] for v in versions.values()), versions


def relay_process(
    dsn: str, nats_url: str, log_path: Path, *args: str, **env_overrides: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "ORDERS_NATS_URL": nats_url,
        "ORDERS_RELAY_BATCH_SIZE": "20",
        "ORDERS_RELAY_POLL_INTERVAL_MS": "50",
        "ORDERS_LOG_LEVEL": "INFO",
        **env_overrides,
    }
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "orders_svc.cli", "relay", *args], env=env, stdout=log, stderr=log
        )


async def _relay_mid_batch(db: asyncpg.Pool) -> bool:
    # Between claim and commit the relay's connection is idle in transaction while it awaits publish acks.
    return bool(
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'orders-svc' AND state = 'idle in transaction'"
        )
    )


async def test_relay_killed_mid_batch_loses_nothing_and_the_broker_drops_repeats(
    fresh_db, fresh_database_url, nats_server, tenant, tmp_path
):
    await fresh_db.execute(INSERT_EVENTS, tenant, [uuid.uuid4() for _ in range(400)], 2)
    log_path = tmp_path / "relay.log"
    proc = relay_process(fresh_database_url, nats_server.url, log_path, "--publisher", "nats")
    try:
        await wait_for(lambda: _relay_mid_batch(fresh_db), timeout=30, interval=0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    assert await unpublished(fresh_db) > 0, log_path.read_text()

    proc = relay_process(fresh_database_url, nats_server.url, log_path, "--publisher", "nats")
    try:
        await wait_for(lambda: all_published(fresh_db), timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log_path.read_text()

    event_ids = sorted(r["id"] for r in await fresh_db.fetch("SELECT id FROM outbox"))
    messages = await read_stream(nats_server.url)
    assert len(messages) == len(event_ids) == 800
    assert sorted(uuid.UUID(m.headers["Nats-Msg-Id"]) for m in messages) == event_ids


async def test_relay_waiting_for_an_unreachable_broker_exits_0_on_sigterm(fresh_database_url, tmp_path):
    log_path = tmp_path / "relay.log"
    unreachable = f"nats://127.0.0.1:{free_port()}"
    # A connect attempt may take 2 x the publish timeout (here two minutes): SIGTERM must not wait for it.
    proc = relay_process(
        fresh_database_url,
        unreachable,
        log_path,
        "--publisher",
        "nats",
        ORDERS_RELAY_PUBLISH_TIMEOUT_MS="60000",
    )
    try:
        await wait_for(lambda: _logged(log_path, "broker connection error"), timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log_path.read_text()
    finally:
        proc.kill()


async def test_relay_exits_0_on_sigterm_while_reconnecting_to_the_broker(
    fresh_database_url, nats_server, tmp_path
):
    log_path = tmp_path / "relay.log"
    proc = relay_process(fresh_database_url, nats_server.url, log_path, "--publisher", "nats")
    try:
        await wait_for(lambda: _logged(log_path, "relay started"), timeout=30)
        nats_server.stop()
        await wait_for(lambda: _logged(log_path, "broker disconnected"), timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log_path.read_text()
    finally:
        proc.kill()
    assert "Traceback" not in log_path.read_text()


def test_a_bad_nats_server_list_stops_the_relay_at_start_up_with_one_line(fresh_database_url, tmp_path):
    env = {**os.environ, "DATABASE_URL": fresh_database_url, "ORDERS_PUBLISHER": "nats"}
    for bad, named in (
        ("nats://127.0.0.1:4222,http://127.0.0.1:4223", "'http://127.0.0.1:4223'"),
        ("nats://127.0.0.1:99999", "'nats://127.0.0.1:99999'"),
        (" , ", "ORDERS_NATS_URL is empty"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "orders_svc.cli", "relay"],
            env={**env, "ORDERS_NATS_URL": bad},
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        [line] = done.stderr.decode().splitlines()
        assert line.startswith("orders-svc: configuration error: ORDERS_NATS_URL") and named in line, line
    missing = tmp_path / "missing.creds"
    done = subprocess.run(
        [sys.executable, "-m", "orders_svc.cli", "relay"],
        env={**env, "ORDERS_NATS_CREDS_FILE": str(missing)},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.decode().splitlines() == [
        f"orders-svc: configuration error: ORDERS_NATS_CREDS_FILE={str(missing)!r}: No such file or directory"
    ]


def test_nats_server_lists_are_split_on_commas():
    assert nats_servers(" nats://a:4222, tls://b:4223 ,wss://c") == [
        "nats://a:4222",
        "tls://b:4223",
        "wss://c",
    ]
    with pytest.raises(SettingsError):
        nats_servers("a:4222")  # no scheme


async def test_relay_settings_are_capped_to_the_streams_duplicate_window(caplog):
    settings = relay_settings("postgresql://unused/db", relay_backoff_cap=timedelta(minutes=5))
    assert within_duplicate_window(settings, None) == settings
    caplog.set_level(logging.INFO, logger="orders_svc.relay")
    bounded = within_duplicate_window(settings, timedelta(minutes=2))
    assert longest_retry(bounded) <= timedelta(minutes=2) < longest_retry(settings)
    assert bounded.relay_backoff_cap == timedelta(minutes=2) - 50 * ms - 500 * ms
    assert [r.levelname for r in caplog.records] == ["INFO"]
    caplog.clear()
    within_duplicate_window(settings, 100 * ms)  # shorter than the ack timeout: cannot be met
    assert [r.levelname for r in caplog.records] == ["WARNING"]


async def _logged(path: Path, text: str) -> bool:
    return text in path.read_text()


async def test_relay_process_with_log_publisher_prints_events_and_exits_0_on_sigterm(
    fresh_client, fresh_db, fresh_database_url, tenant, tmp_path
):
    [order] = await close_orders(fresh_client, tenant, 1)
    env = {**os.environ, "DATABASE_URL": fresh_database_url, "ORDERS_RELAY_POLL_INTERVAL_MS": "50"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orders_svc.cli", "relay", "--publisher", "log"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        await wait_for(lambda: all_published(fresh_db), timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err.decode()
    [line] = out.decode().splitlines()
    event = json.loads(line)
    assert event["subject"] == "orders.closed" and event["tenantId"] == tenant
    assert event["payload"]["orderId"] == order["id"] and event["payload"]["closedAt"] == order["updatedAt"]


async def test_broker_outage_charges_no_event_logs_once_and_delivers_everything_when_it_returns(
    fresh_client, fresh_db, fresh_database_url, nats_server, tenant, caplog
):
    # Two attempts would dead-letter a charged event: an outage of many probes must not come near that.
    settings = relay_settings(
        fresh_database_url,
        nats_server.url,
        relay_max_attempts=2,
        relay_backoff_base=20 * ms,
        relay_probe_max=100 * ms,
    )
    publisher = await NatsPublisher.connect(nats_server.url, 0.5)
    relay = Relay(settings, fresh_database_url, publisher)
    caplog.set_level(logging.INFO, logger="orders_svc.relay")
    async with running(relay):
        await close_orders(fresh_client, tenant, 1)
        await wait_for(lambda: all_published(fresh_db))
        nats_server.stop()
        await close_orders(fresh_client, tenant, 5)
        await wait_for(lambda: _probed(relay, 5))
        rows = await fresh_db.fetch("SELECT * FROM outbox WHERE published_at IS NULL")
        assert len(rows) == 5
        for row in rows:  # not charged: no attempt, no error, no backoff, never dead
            assert (row["attempts"], row["last_error"], row["next_attempt_at"], row["dead_at"]) == (
                0,
                None,
                None,
                None,
            )
        nats_server.start()
        await wait_for(lambda: all_published(fresh_db), timeout=30)
        assert relay.outage is None
    await publisher.close()
    event_ids = sorted(r["id"] for r in await fresh_db.fetch("SELECT id FROM outbox"))
    messages = await read_stream(nats_server.url)
    assert sorted(uuid.UUID(m.headers["Nats-Msg-Id"]) for m in messages) == event_ids
    said = Counter(r.getMessage() for r in caplog.records if r.name == "orders_svc.relay")
    assert said["broker unavailable; publishing paused, probing with one event"] == 1, said
    assert said["broker available again; publishing resumed"] == 1, said
    assert not [m for m in said if m.startswith("publish failed")], said


async def _probed(relay: Relay, probes: int) -> bool:
    return relay.outage is not None and relay.outage.probes >= probes


async def test_an_event_the_stream_refuses_is_charged_and_dead_lettered_while_the_others_flow(
    fresh_db, fresh_database_url, nats_server, tenant
):
    # A stream that takes no message over 1,000 bytes: JetStream refuses that one message, not the broker.
    client = await nats.connect(nats_server.url)
    await client.jetstream().add_stream(name=STREAM, subjects=STREAM_SUBJECTS, max_msg_size=1000)
    await client.close()
    big, small = uuid.uuid4(), uuid.uuid4()
    await fresh_db.execute(INSERT_EVENTS, tenant, [small], 1)
    await fresh_db.execute(
        "INSERT INTO outbox (id, event_type, order_id, order_version, tenant_id, payload) "
        "VALUES (gen_random_uuid(), 'orders.test.big', $1, 1, $2, "
        "jsonb_build_object('pad', repeat('x', 2000)))",
        big,
        tenant,
    )
    settings = relay_settings(
        fresh_database_url,
        nats_server.url,
        relay_max_attempts=3,
        relay_backoff_base=ms,
        relay_backoff_cap=5 * ms,
    )
    publisher = await NatsPublisher.connect(nats_server.url, 1.0)
    relay = Relay(settings, fresh_database_url, publisher)
    async with running(relay):
        dead = await wait_for(
            lambda: fresh_db.fetchrow("SELECT * FROM outbox WHERE order_id = $1 AND dead_at IS NOT NULL", big)
        )
        await wait_for(lambda: _published_count(fresh_db, 1))
        assert relay.outage is None
    await publisher.close()
    assert dead["attempts"] == 3 and "maximum" in dead["last_error"].lower(), dead["last_error"]
    [message] = await read_stream(nats_server.url)
    assert message.data["orderId"] == str(small)


async def test_failing_event_is_dead_lettered_holds_back_its_order_and_retry_dead_delivers_it(
    fresh_client, fresh_db, fresh_database_url, tenant
):
    [poisoned_order, other_order] = [uuid.uuid4(), uuid.uuid4()]
    await fresh_db.execute(INSERT_EVENTS, tenant, [poisoned_order, other_order], 2)
    first = await fresh_db.fetchval(
        "SELECT id FROM outbox WHERE order_id = $1 AND order_version = 1", poisoned_order
    )
    publisher = PoisonPublisher({first})
    settings = relay_settings(
        fresh_database_url, relay_max_attempts=3, relay_backoff_base=ms, relay_backoff_cap=5 * ms
    )
    async with running(Relay(settings, fresh_database_url, publisher)):
        dead = await wait_for(
            lambda: fresh_db.fetchrow("SELECT * FROM outbox WHERE id = $1 AND dead_at IS NOT NULL", first)
        )
        await wait_for(lambda: _published_count(fresh_db, 2))  # the other order flows meanwhile
        assert dead["attempts"] == 3 and dead["published_at"] is None
        assert dead["last_error"] == "ConnectionError: broker refused orders.test.v1"
        # The dead event's successor stays back: publishing it first would reorder the order's events.
        assert (
            await fresh_db.fetchval(
                "SELECT published_at FROM outbox WHERE order_id = $1 AND order_version = 2", poisoned_order
            )
            is None
        )
        assert [e.order_id for e in publisher.accepted] == [other_order, other_order]

        publisher.poisoned.clear()
        retried = subprocess.run(
            [sys.executable, "-m", "orders_svc.cli", "outbox", "retry-dead"],
            env={**os.environ, "DATABASE_URL": fresh_database_url},
            capture_output=True,
            check=True,
        )
        assert retried.stdout.decode().startswith("1 dead-lettered"), retried.stdout
        await wait_for(lambda: all_published(fresh_db))
    assert [(e.order_id, e.order_version) for e in publisher.accepted[2:]] == [
        (poisoned_order, 1),
        (poisoned_order, 2),
    ]
    assert await fresh_db.fetchval("SELECT count(*) FROM outbox WHERE dead_at IS NOT NULL") == 0


async def test_log_publisher_writes_one_json_line_per_event(tmp_path):
    path = tmp_path / "events.jsonl"
    event = OutboxEvent(uuid.uuid4(), "orders.closed", uuid.uuid4(), 3, "t-1", {"orderId": "x"}, 0)
    with path.open("w") as stream:
        publisher = LogPublisher(stream)
        await publisher.publish(event)
        await publisher.publish(event)
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0]) == {
        "id": str(event.id),
        "subject": "orders.closed",
        "orderId": str(event.order_id),
        "orderVersion": 3,
        "tenantId": "t-1",
        "payload": {"orderId": "x"},
    }


def test_relay_settings_come_from_the_environment_and_bad_values_fail_fast():
    settings = Settings.from_env(
        {
            "ORDERS_PUBLISHER": "nats",
            "ORDERS_RELAY_MAX_ATTEMPTS": "3",
            "ORDERS_RELAY_BACKOFF_BASE_MS": "20",
            "ORDERS_RELAY_BACKOFF_CAP_MS": "400",
            "ORDERS_OUTBOX_RETENTION_HOURS": "24",
        }
    )
    assert (settings.publisher, settings.relay_max_attempts) == ("nats", 3)
    assert (settings.relay_backoff_base, settings.relay_backoff_cap) == (20 * ms, 400 * ms)
    assert settings.outbox_retention == timedelta(hours=24)
    assert Settings.from_env({}).outbox_retention == timedelta(hours=168)
    for bad in (
        {"ORDERS_RELAY_MAX_ATTEMPTS": "0"},
        {"ORDERS_RELAY_BATCH_SIZE": "many"},
        {"ORDERS_RELAY_BACKOFF_BASE_MS": "5000", "ORDERS_RELAY_BACKOFF_CAP_MS": "1000"},
        {"ORDERS_OUTBOX_RETENTION_HOURS": "-1"},
        {"ORDERS_PUBLISHER": "kafka"},
    ):
        with pytest.raises(SettingsError):
            Settings.from_env(bad)


class GatedPublisher:
    """Holds the first event until the gate opens (a relay caught mid-publish), accepts the rest at once."""

    def __init__(self) -> None:
        self.publishing = asyncio.Event()
        self.gate = asyncio.Event()
        self.accepted: list[OutboxEvent] = []

    async def publish(self, event: OutboxEvent) -> None:
        if not self.accepted:
            self.publishing.set()
            await self.gate.wait()
        self.accepted.append(event)

    async def close(self) -> None:
        return None


async def test_an_event_committed_while_the_relay_publishes_goes_out_without_a_notify_or_poll(
    fresh_client, fresh_db, fresh_database_url, tenant
):
    # The outbox only NOTIFYs when a commit finds it idle; the second close finds the first event pending,
    # so only the relay's drain-until-empty loop (not a NOTIFY, not the 10-minute poll) can pick it up.
    publisher = GatedPublisher()
    relay = Relay(
        relay_settings(fresh_database_url, relay_poll_interval=timedelta(minutes=10)),
        fresh_database_url,
        publisher,
    )
    async with running(relay):
        await wait_for(lambda: _listening(fresh_db))
        await close_orders(fresh_client, tenant, 1)
        await asyncio.wait_for(publisher.publishing.wait(), 10)
        await close_orders(fresh_client, tenant, 1)
        publisher.gate.set()
        await wait_for(lambda: _published_count(fresh_db, 2), timeout=10)
    assert len(publisher.accepted) == 2


class ObservedRelay(Relay):
    """A relay whose claims the test can follow: how many events each claim returned, in order."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.claims: list[int] = []

    async def relay_batch(self, pool: Any) -> int:
        claimed = await super().relay_batch(pool)
        self.claims.append(claimed)
        return claimed


async def test_an_event_committed_just_after_the_relay_drained_is_not_left_for_the_poll(
    fresh_db, fresh_database_url, tenant
):
    # The lost wake-up, step by step: X is inserted while event E is being published, so X's trigger finds an
    # older event pending and sends no NOTIFY; the relay then settles E and claims again before X commits (an
    # empty claim), and only then does X commit. Nothing but the relay itself can pick X up now (the poll is
    # ten minutes away).
    publisher = GatedPublisher()
    relay = ObservedRelay(
        relay_settings(fresh_database_url, relay_poll_interval=timedelta(minutes=10)),
        fresh_database_url,
        publisher,
    )
    notified: list[str] = []
    listener = await asyncpg.connect(fresh_database_url)
    writer = await asyncpg.connect(fresh_database_url)
    try:
        async with running(relay):
            await wait_for(lambda: _listening(fresh_db))
            await fresh_db.execute(INSERT_EVENTS, tenant, [uuid.uuid4()], 1)  # E: the outbox was idle
            await asyncio.wait_for(publisher.publishing.wait(), 10)
            await listener.add_listener("orders_outbox", lambda *args: notified.append(args[2]))
            transaction = writer.transaction()
            await transaction.start()
            await writer.execute(  # X, created after E (INSERT_EVENTS backdates), not committed yet
                "INSERT INTO outbox (id, event_type, order_id, order_version, tenant_id, payload) "
                "VALUES (gen_random_uuid(), 'orders.test.x', gen_random_uuid(), 1, $1, '{}')",
                tenant,
            )
            publisher.gate.set()
            await wait_for(lambda: _claimed_nothing_after_a_batch(relay))
            await transaction.commit()
            await listener.execute("SELECT 1")  # a round trip delivers any pending notification
            assert notified == []  # X's commit woke nobody
            await wait_for(lambda: _published_count(fresh_db, 2), timeout=10)
    finally:
        await listener.close()
        await writer.close()
    assert len(publisher.accepted) == 2


async def _claimed_nothing_after_a_batch(relay: ObservedRelay) -> bool:
    return 1 in relay.claims and relay.claims[-1] == 0


async def test_watch_script_waits_for_the_stream_then_prints_each_new_event(
    fresh_client, fresh_db, fresh_database_url, nats_server, tenant
):
    """scripts/watch_events.py (`make watch`), started before any relay created the stream."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "watch_events.py"
    watcher = await _watcher(script, nats_server.url)
    assert watcher.stdout is not None

    async def next_line() -> str:
        return (await asyncio.wait_for(watcher.stdout.readline(), 20)).decode()

    try:
        assert (await next_line()).startswith("waiting for the ORDERS stream")
        publisher = await NatsPublisher.connect(nats_server.url, 1.0)
        async with running(
            Relay(relay_settings(fresh_database_url, nats_server.url), fresh_database_url, publisher)
        ):
            assert (await next_line()).startswith("watching orders.>")
            [order] = await close_orders(fresh_client, tenant, 1)
            event_line, payload_line = await next_line(), await next_line()
            await wait_for(lambda: all_published(fresh_db))
        await publisher.close()
    finally:
        watcher.terminate()
        await watcher.wait()
    event_id = await fresh_db.fetchval("SELECT id FROM outbox")
    assert f" orders.closed  Nats-Msg-Id={event_id} " in event_line
    assert f"Orders-Tenant-Id={tenant}" in event_line and "ms after the close)" in event_line
    assert json.loads(payload_line)["orderId"] == order["id"]


async def test_watch_script_says_one_line_per_broker_error_and_carries_on(nats_server):
    script = Path(__file__).resolve().parent.parent / "scripts" / "watch_events.py"
    publisher = await NatsPublisher.connect(nats_server.url, 1.0)  # creates the stream
    await publisher.close()
    watcher = await _watcher(script, nats_server.url)
    assert watcher.stdout is not None and watcher.stderr is not None
    said: list[str] = []

    async def until_said(text: str) -> None:
        while not any(text in line for line in said):
            said.append((await asyncio.wait_for(watcher.stderr.readline(), 30)).decode())

    try:
        assert (await asyncio.wait_for(watcher.stdout.readline(), 20)).startswith(b"watching orders.>")
        nats_server.stop()
        await until_said("broker disconnected")
        await until_said("broker error")  # a reconnect attempt refused
        nats_server.start()
        await until_said("broker reconnected")
    finally:
        watcher.terminate()
        await watcher.wait()
    assert all(line[:2].isdigit() and line.count("\n") == 1 for line in said), said
    assert not [line for line in said if "Traceback" in line], said


async def _watcher(script: Path, url: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        "--url",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
