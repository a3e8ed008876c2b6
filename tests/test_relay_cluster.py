"""The relay against a real 3-node NATS JetStream cluster on loopback, with an R3 stream.

Failover, quorum loss, a relay whose first listed server is down, and the replicas of the stream it creates.
The quorum-loss outage lasts ORDERS_TEST_QUORUM_OUTAGE_SECONDS (10 in the suite;
`scripts/relay_cluster_outage.sh` runs it with 60 and prints the figures).
"""

import asyncio
import logging
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import asyncpg
import httpx
import nats
import pytest
from nats_support import NatsCluster, StreamMessage, read_stream
from test_relay import all_published, relay_process

from orders_svc.publishers import STREAM, STREAM_SUBJECTS, NatsOptions, NatsPublisher

from conftest import free_port
from helpers import close, confirmed_id
from support import wait_for

OUTAGE_SECONDS = float(os.environ.get("ORDERS_TEST_QUORUM_OUTAGE_SECONDS", "10"))
RELAY_ENV = {
    "ORDERS_NATS_STREAM_REPLICAS": "3",
    "ORDERS_RELAY_PUBLISH_TIMEOUT_MS": "2000",
    "ORDERS_RELAY_BACKOFF_BASE_MS": "100",
    "ORDERS_RELAY_PROBE_MAX_MS": "1000",
}
# What a relay says about the broker: connection changes (nats-py callbacks) and outages (the relay loop).
BROKER_LINES = ("broker", "publish failed", "publisher unavailable", "dead-lettered")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    nodes = NatsCluster(
        [free_port() for _ in range(3)], [free_port() for _ in range(3)], tmp_path_factory.mktemp("cluster")
    )
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
async def nats_cluster(cluster: NatsCluster) -> AsyncIterator[NatsCluster]:
    """The module's cluster with every node up and no ORDERS stream: each test starts from scratch."""
    cluster.start()
    await cluster.wait_until_ready()
    client = await nats.connect(cluster.url.split(","))
    try:
        js = client.jetstream(timeout=10)
        with suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(STREAM)
    finally:
        await client.close()
    yield cluster
    cluster.start()  # a test that failed with nodes down leaves the cluster whole for the next


@asynccontextmanager
async def relays(dsn: str, url: str, tmp_path: Path, count: int = 2) -> AsyncIterator[list[Path]]:
    """`orders-svc relay --publisher nats` processes; stopped with SIGTERM, and each must exit 0."""
    logs = [tmp_path / f"relay{i}.log" for i in range(count)]
    procs = [relay_process(dsn, url, log, "--publisher", "nats", **RELAY_ENV) for log in logs]
    try:
        yield logs
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [_wait(proc) for proc in procs]
        assert codes == [0] * count, "\n".join(log.read_text()[-3000:] for log in logs)


def _wait(proc: subprocess.Popen[bytes]) -> int | None:
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None


class SteadyCloses:
    """Closes orders one after another at a steady pace until stopped, as a busy shop would."""

    def __init__(self, client: httpx.AsyncClient, tenant: str, pause: float = 0.05) -> None:
        self.client = client
        self.tenant = tenant
        self.pause = pause
        self.closed: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            order_id = await confirmed_id(self.client, self.tenant, total=100)
            response = await close(self.client, self.tenant, order_id)
            assert response.status_code == 200, response.text
            self.closed.append(order_id)
            await asyncio.sleep(self.pause)

    async def __aenter__(self) -> "SteadyCloses":
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


async def _stream_exists(url: str) -> bool:
    """Whether the stream exists yet; False also while JetStream does not answer (a cluster just started, or
    just back from a previous test's kills, is still electing its leaders)."""
    client = await nats.connect(url.split(","))
    try:
        await client.jetstream(timeout=2).stream_info(STREAM)
        return True
    except (
        nats.js.errors.NotFoundError,
        nats.js.errors.ServiceUnavailableError,
        nats.errors.NoRespondersError,
        nats.errors.TimeoutError,
    ):
        return False
    finally:
        await client.close()


async def _until_closed(closes: SteadyCloses, count: int) -> bool:
    return len(closes.closed) >= count


async def _assert_each_closed_order_once(
    db: asyncpg.Pool, cluster: NatsCluster, closes: SteadyCloses
) -> None:
    rows = await db.fetch("SELECT id, order_id, attempts, dead_at FROM outbox")
    assert sorted(str(r["order_id"]) for r in rows) == sorted(closes.closed)
    assert [r for r in rows if r["dead_at"] is not None] == []
    messages = await _stream_messages(cluster)
    on_stream = Counter(uuid.UUID(m.headers["Nats-Msg-Id"]) for m in messages)
    assert on_stream == Counter(r["id"] for r in rows)  # every event exactly once, and nothing else
    assert sorted(m.data["orderId"] for m in messages) == sorted(closes.closed)


async def _stream_messages(cluster: NatsCluster) -> list[StreamMessage]:
    """The stream's messages once JetStream answers again (a node just back may say 503 for a while)."""
    deadline = time.monotonic() + 60
    while True:
        await cluster.stream_leader()
        try:
            return await read_stream(cluster.url)
        except nats.js.errors.ServiceUnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def _broker_lines(logs: list[Path]) -> list[str]:
    return [
        line for log in logs for line in log.read_text().splitlines() if any(w in line for w in BROKER_LINES)
    ]


async def test_the_stream_leader_killed_mid_stream_and_restarted_loses_and_repeats_nothing(
    fresh_client, fresh_db, fresh_database_url, nats_cluster, tenant, tmp_path
):
    async with relays(fresh_database_url, nats_cluster.url, tmp_path) as logs:
        async with SteadyCloses(fresh_client, tenant) as closes:
            await wait_for(lambda: _stream_exists(nats_cluster.url), timeout=30)
            leader = nats_cluster.node(await nats_cluster.stream_leader())
            await wait_for(lambda: _until_closed(closes, 20), timeout=60)
            leader.kill()
            new_leader = await nats_cluster.stream_leader()  # elected by the two others
            assert new_leader != leader.name
            count = len(closes.closed)
            await wait_for(lambda: _until_closed(closes, count + 20), timeout=60)
            leader.start()
            count = len(closes.closed)
            await wait_for(lambda: _until_closed(closes, count + 20), timeout=60)
        await wait_for(lambda: all_published(fresh_db), timeout=60)
    await _assert_each_closed_order_once(fresh_db, nats_cluster, closes)
    assert [line for line in _broker_lines(logs) if "publish failed" in line] == []


async def test_quorum_lost_under_steady_closes_dead_letters_nothing_and_drains_once_restored(
    fresh_client, fresh_db, fresh_database_url, nats_cluster, tenant, tmp_path
):
    async with relays(fresh_database_url, nats_cluster.url, tmp_path) as logs:
        async with SteadyCloses(fresh_client, tenant) as closes:
            await wait_for(lambda: _stream_exists(nats_cluster.url), timeout=30)
            await nats_cluster.stream_leader()
            await wait_for(lambda: _until_closed(closes, 20), timeout=60)
            lost = nats_cluster.nodes[1:]
            for node in lost:  # two of three: neither the stream nor the cluster has a quorum
                node.kill()
            lost_at = time.monotonic()
            await asyncio.sleep(OUTAGE_SECONDS)  # closes go on: their events wait in the outbox
            during = len(closes.closed)
            for node in lost:
                node.start()
            restored_at = time.monotonic()
            await wait_for(lambda: _until_closed(closes, during + 20), timeout=60)
        waiting = await fresh_db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        await wait_for(lambda: all_published(fresh_db), timeout=30)  # within 30 s of the quorum's return
        drained_at = time.monotonic()
    await _assert_each_closed_order_once(fresh_db, nats_cluster, closes)
    said = _broker_lines(logs)
    print(
        f"\nquorum lost {restored_at - lost_at:.1f} s; {len(closes.closed)} orders closed; "
        f"{waiting} events still waiting after the closes stopped; outbox empty "
        f"{drained_at - restored_at:.1f} s after the nodes restarted; "
        f"{len(said)} log lines about the broker from 2 relays:\n" + "\n".join(said)
    )
    assert [line for line in said if "publish failed" in line or "dead-lettered" in line] == []
    assert len(said) <= 10 * len(logs), said  # a handful per relay, not one per event
    assert (
        await fresh_db.fetchval("SELECT count(*) FROM outbox WHERE attempts > 0 OR last_error IS NOT NULL")
        == 0
    )


async def test_a_relay_whose_first_listed_server_is_down_connects_to_another_and_publishes(
    fresh_client, fresh_db, fresh_database_url, nats_cluster, tenant, tmp_path
):
    first, second, _ = nats_cluster.nodes
    publisher = await NatsPublisher.connect(NatsOptions([second.url], 2.0, replicas=3))  # the R3 stream
    await publisher.close()
    first.kill()
    async with relays(fresh_database_url, f"{first.url},{second.url}", tmp_path, count=1) as logs:
        async with SteadyCloses(fresh_client, tenant) as closes:
            await wait_for(lambda: _until_closed(closes, 5), timeout=60)
        await wait_for(lambda: all_published(fresh_db), timeout=60)
    await _assert_each_closed_order_once(fresh_db, nats_cluster, closes)
    assert "relay started" in logs[0].read_text()


async def test_the_stream_a_relay_creates_has_the_configured_replicas_and_fewer_are_warned_about(
    nats_cluster, caplog
):
    caplog.set_level(logging.INFO, logger="orders_svc.relay")
    servers = nats_cluster.url.split(",")
    publisher = await NatsPublisher.connect(NatsOptions(servers, 2.0, replicas=3))
    await publisher.close()
    client = await nats.connect(servers)
    try:
        js = client.jetstream(timeout=5)
        info = await js.stream_info(STREAM)
        assert info.config.num_replicas == 3 and publisher.replicas == 3
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2  # besides the leader
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

        await js.delete_stream(STREAM)  # an R1 stream made by hand: used, with a warning
        await js.add_stream(name=STREAM, subjects=STREAM_SUBJECTS, num_replicas=1)
    finally:
        await client.close()
    publisher = await NatsPublisher.connect(NatsOptions(servers, 2.0, replicas=3))
    await publisher.close()
    assert publisher.replicas == 1
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "fewer replicas than configured" in warning.getMessage()
    assert (warning.replicas, warning.configured) == (1, 3)  # type: ignore[attr-defined]
