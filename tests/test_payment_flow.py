"""The whole payment saga through real processes: the API, the relay publishing to a real nats-server, and
`orders-svc fake-provider run` consuming payments.requested and settling each by a signed webhook."""

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import nats
from catalogue import add_product, lines
from nats_support import NatsServer, read_stream
from payment_helpers import KEY, SECRET

from orders_svc.fake_provider import Provider
from orders_svc.publishers import STREAM, NatsPublisher

from conftest import free_port
from helpers import tenant_headers
from servers import serving
from support import wait_for


@contextmanager
def process(log_path: Path, *args: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orders_svc.cli", *args],
            env={**os.environ, "ORDERS_LOG_LEVEL": "INFO", **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def test_an_existing_stream_without_the_payment_subjects_gets_them_at_start_up(tmp_path):
    server = NatsServer(free_port(), tmp_path / "jetstream", tmp_path / "nats.log")
    server.start()
    try:
        client = await nats.connect(server.url)
        await client.jetstream().add_stream(name=STREAM, subjects=["orders.>"])
        await client.close()
        publisher = await NatsPublisher.connect(server.url, 1.0)
        await publisher.close()
        client = await nats.connect(server.url)
        info = await client.jetstream().stream_info(STREAM)
        await client.close()
    finally:
        server.stop()
    assert info.config.subjects == ["orders.>", "payments.>"]


async def test_orders_are_paid_or_cancelled_with_their_stock_back_by_the_fake_provider_through_the_relay(
    fresh_database_url, fresh_db, tenant, tmp_path
):
    server = NatsServer(free_port(), tmp_path / "jetstream", tmp_path / "nats.log")
    server.start()
    env = {
        "ORDERS_WEBHOOK_SECRETS": SECRET,
        "ORDERS_NATS_URL": server.url,
        "DATABASE_URL": fresh_database_url,
    }
    rate = 0.5
    try:
        with (
            serving(fresh_database_url, tmp_path / "api.log", **env) as base,
            process(
                tmp_path / "relay.log",
                "relay",
                "--publisher",
                "nats",
                ORDERS_RELAY_POLL_INTERVAL_MS="100",
                **env,
            ),
            process(
                tmp_path / "provider.log",
                "fake-provider",
                "run",
                "--delay-ms",
                "100",
                "--failure-rate",
                str(rate),
                "--url",
                f"{base}/webhooks/payments",
                **env,
            ),
        ):
            provider = Provider("", KEY, 0, rate)
            expected: dict[str, tuple[str, str, str]] = {}  # payment -> (order, product, outcome)
            async with httpx.AsyncClient(base_url=base, headers=tenant_headers(tenant)) as http:
                # Until both outcomes are due (each payment's is drawn from its id): both paths run.
                while len({outcome for *_, outcome in expected.values()}) < 2 or len(expected) < 4:
                    product = await add_product(fresh_db, tenant, stock=5, price=300)
                    key = {"Idempotency-Key": uuid.uuid4().hex}
                    created = await http.post("/orders", headers=key, json={"items": lines((product, 2))})
                    order_id = created.json()["id"]
                    confirmed = await http.patch(
                        f"/orders/{order_id}/confirm", headers={"If-Match": '"1"'}, json={}
                    )
                    assert confirmed.status_code == 200, confirmed.text
                    paid = await http.post(
                        f"/orders/{order_id}/payments", headers={"Idempotency-Key": f"pay-{order_id}"}
                    )
                    assert paid.status_code == 201, paid.text
                    payment_id = paid.json()["id"]
                    expected[payment_id] = (order_id, product, provider.outcome(payment_id))

                async def settled() -> bool:
                    pending = await fresh_db.fetchval(
                        "SELECT count(*) FROM payments WHERE status = 'pending'"
                    )
                    unpublished = await fresh_db.fetchval(
                        "SELECT count(*) FROM outbox WHERE published_at IS NULL"
                    )
                    return pending == 0 and unpublished == 0

                await wait_for(settled, timeout=60)
                for payment_id, (order_id, product, outcome) in expected.items():
                    payment = (await http.get(f"/payments/{payment_id}")).json()
                    order = (await http.get(f"/orders/{order_id}")).json()
                    stock = await fresh_db.fetchval(
                        "SELECT stock FROM products WHERE id = $1", uuid.UUID(product)
                    )
                    assert payment["status"] == outcome
                    assert (order["status"], stock) == (
                        ("paid", 3) if outcome == "succeeded" else ("cancelled", 5)
                    )
                    if outcome == "succeeded":
                        closed = await http.post(f"/orders/{order_id}/close")
                        assert closed.status_code == 200 and closed.json()["status"] == "closed"
                await wait_for(settled, timeout=60)  # the closes' events published too
            messages = await read_stream(server.url)
    finally:
        server.stop()
    by_order: dict[str, list[str]] = {}
    for message in messages:
        by_order.setdefault(message.data["orderId"], []).append(message.subject)
    for order_id, _, outcome in expected.values():
        after = ["orders.paid", "orders.closed"] if outcome == "succeeded" else ["orders.cancelled"]
        assert by_order[order_id] == ["payments.requested", *after]
