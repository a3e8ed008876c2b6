"""Close → broker latency of the outbox relay at a steady close rate, with several relays.

    .venv/bin/python bench/relay_latency.py                    # 70 closes/s, 2,000 closes, 2 relays
    .venv/bin/python bench/relay_latency.py --rate 200 --relays 3 --poll-ms 3000

Starts a fresh database (as bench/run.py does), `orders-svc serve --migrate`, a NATS JetStream server in a
temporary directory and `orders-svc relay --publisher nats` processes on the default poll interval. It creates
and confirms the orders first, then closes them at a steady rate and reads the ORDERS stream: the latency of
an event is the time JetStream stored it minus the close time in its payload (`closedAt`), both from this
machine's clock. Prints p50, p90, p99 and the maximum, and how many events took longer than half the poll
interval (those that waited for a poll rather than a NOTIFY or a draining relay).
"""

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import nats
from nats.js.api import DeliverPolicy

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))  # servers.py, helpers, nats_support

from nats_support import NatsServer
from options import Options
from sampling import percentile
from service import fresh_database, service

from orders_svc.publishers import STREAM, STREAM_SUBJECTS

from helpers import close, confirmed_id
from servers import free_port


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=70.0, help="closes per second (default 70)")
    parser.add_argument("--count", type=int, default=2000, help="closes measured (default 2000)")
    parser.add_argument("--relays", type=int, default=2, help="relay processes (default 2)")
    parser.add_argument(
        "--poll-ms", type=int, default=1000, help="ORDERS_RELAY_POLL_INTERVAL_MS (default 1000)"
    )
    return parser.parse_args()


def start_relays(dsn: str, url: str, args: argparse.Namespace, tmp: Path) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "ORDERS_NATS_URL": url,
        "ORDERS_RELAY_POLL_INTERVAL_MS": str(args.poll_ms),
        "ORDERS_LOG_LEVEL": "WARNING",
    }
    procs = []
    for i in range(args.relays):
        with (tmp / f"relay{i}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "orders_svc.cli", "relay", "--publisher", "nats"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    return procs


async def measure(base: str, url: str, args: argparse.Namespace) -> list[float]:
    tenant = f"bench-relay-{os.getpid()}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        orders = [await confirmed_id(client, tenant, total=100) for _ in range(args.count)]
        nc = await nats.connect(url)
        js = nc.jetstream()
        for _ in range(100):  # the first relay creates the stream
            try:
                await js.stream_info(STREAM)
                break
            except nats.js.errors.NotFoundError:
                await asyncio.sleep(0.1)
        sub = await js.subscribe(
            STREAM_SUBJECTS[0], stream=STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
        )
        latencies: list[float] = []

        async def read() -> None:
            async for msg in sub.messages:
                closed_at = datetime.fromisoformat(msg.data.decode().split('"closedAt":"')[1].split('"')[0])
                latencies.append((msg.metadata.timestamp - closed_at).total_seconds() * 1000)
                if len(latencies) == len(orders):
                    return

        reader = asyncio.create_task(read())
        start = time.monotonic()
        for i, order_id in enumerate(orders):  # a steady pace: each close at its own instant
            await asyncio.sleep(max(0.0, start + i / args.rate - time.monotonic()))
            response = await close(client, tenant, order_id)
            assert response.status_code == 200, response.text
        await asyncio.wait_for(reader, 60)
        await nc.close()
    return latencies


def main() -> None:
    args = parse_args()
    options = Options(
        0, 0, workers=1, threads=1, pool_max=None, log_level="WARNING", quick=False, output=Path()
    )
    with tempfile.TemporaryDirectory(prefix="orders-relay-bench-") as tmp_dir, fresh_database() as dsn:
        tmp = Path(tmp_dir)
        nats_server = NatsServer(free_port(), tmp / "jetstream", tmp / "nats.log")
        nats_server.start()
        try:
            with service(options, dsn, tmp / "service.log") as (base, _):
                relays = start_relays(dsn, nats_server.url, args, tmp)
                try:
                    latencies = asyncio.run(measure(base, nats_server.url, args))
                finally:
                    for proc in relays:
                        proc.send_signal(signal.SIGTERM)
                        proc.wait(20)
        finally:
            nats_server.stop()
    ordered = sorted(int(x * 1000) for x in latencies)  # microseconds, as sampling.percentile expects ints
    late = sum(1 for x in latencies if x > args.poll_ms / 2)
    figures = ", ".join(f"p{p:g} {percentile(ordered, p) / 1000:.1f} ms" for p in (50, 90, 99))
    print(
        f"close → broker at {args.rate:g} closes/s, {args.relays} relays, poll {args.poll_ms} ms, "
        f"{len(latencies)} events: {figures}, max {ordered[-1] / 1000:.1f} ms; "
        f"{late} over half the poll interval"
    )


if __name__ == "__main__":
    main()
