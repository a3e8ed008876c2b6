"""The relay's own /metrics and /healthz (`relay --metrics-port`): published by subject, batch sizes, the lag
from commit to ack, refused publishes and dead letters."""

import asyncio
import os
import signal
import subprocess
import sys
from datetime import timedelta

import httpx
from prometheus_client import generate_latest

from orders_svc.observability import metrics
from orders_svc.queries.outbox import OutboxEvent
from orders_svc.relay import Relay

from conftest import free_port
from conftest import test_settings as settings_for
from helpers import close, confirmed_id
from metrics_support import parse, value
from support import wait_for

ms = timedelta(milliseconds=1)


async def unpublished(db) -> int:
    return int(
        await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL AND dead_at IS NULL")
    )


async def close_orders(client, tenant: str, count: int) -> None:
    for _ in range(count):
        order_id = await confirmed_id(client, tenant)
        assert (await close(client, tenant, order_id)).status_code == 200


async def test_the_relay_process_serves_its_metrics_and_health(
    fresh_client, fresh_db, fresh_database_url, tenant
):
    await close_orders(fresh_client, tenant, 3)
    port = free_port()
    env = {**os.environ, "DATABASE_URL": fresh_database_url, "ORDERS_RELAY_POLL_INTERVAL_MS": "50"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orders_svc.cli", "relay", "--publisher", "log", "--metrics-port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_for(lambda: drained(fresh_db), timeout=30)

        async def scraped() -> dict | None:
            try:
                async with httpx.AsyncClient(base_url=base) as http:
                    response = await http.get("/metrics")
            except httpx.HTTPError:
                return None
            return parse(response.text)

        samples = await wait_for(scraped, timeout=30)
        async with httpx.AsyncClient(base_url=base) as http:
            health = await http.get("/healthz")
            missing = await http.get("/nothing")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err.decode()
    assert value(samples, "orders_relay_published_events_total", subject="orders.closed") == 3
    assert value(samples, "orders_relay_lag_seconds_count") == 3
    assert value(samples, "orders_relay_batch_size_sum") == 3
    assert value(samples, "orders_relay_batch_size_count") >= 1
    assert value(samples, "orders_relay_dead_lettered_events_total") == 0
    assert health.status_code == 200 and health.json() == {"status": "ok", "brokerAvailable": True}
    assert missing.status_code == 404


async def drained(db) -> bool:
    return await unpublished(db) == 0


class RefusingPublisher:
    """Refuses every event (a broker that answers, and says no): each failure is charged to its event."""

    async def publish(self, event: OutboxEvent) -> None:
        raise ValueError(f"refused {event.id}")

    async def close(self) -> None:
        return None


async def test_refused_publishes_and_dead_letters_are_counted(
    fresh_client, fresh_db, fresh_database_url, tenant
):
    await close_orders(fresh_client, tenant, 2)
    before = parse(generate_latest(metrics.RELAY).decode())
    settings = settings_for(
        fresh_database_url,
        relay_poll_interval=20 * ms,
        relay_backoff_base=1 * ms,
        relay_backoff_cap=5 * ms,
        relay_max_attempts=2,
    )
    relay = Relay(settings, fresh_database_url, RefusingPublisher())
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await wait_for(lambda: drained(fresh_db))
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    after = parse(generate_latest(metrics.RELAY).decode())

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("orders_relay_publish_failures_total", reason="refused") == 4  # 2 events x 2 attempts
    assert delta("orders_relay_dead_lettered_events_total") == 2
    assert delta("orders_relay_published_events_total", subject="orders.closed") == 0
    assert relay.health()[0]
