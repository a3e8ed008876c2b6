"""The relay's publisher is an explicit choice: without one it refuses to start, and `log` says at start-up
that events go to stdout, not to a broker."""

import json
import os
import signal
import subprocess
import sys

from servers import free_port
from support import wait_for

RELAY = [sys.executable, "-m", "orders_svc.cli", "relay"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORDERS_", "DATABASE_URL"))}
    return {**env, **extra}


def test_the_relay_without_a_publisher_refuses_to_start_before_touching_the_database():
    unreachable = f"postgresql://orders@127.0.0.1:{free_port()}/orders"
    result = subprocess.run(
        RELAY, env=_env(DATABASE_URL=unreachable), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.startswith("orders-svc relay: choose where events go: --publisher nats"), (
        result.stderr
    )
    assert result.stderr.count("\n") == 1 and "database" not in result.stderr
    assert not result.stdout


async def test_the_log_publisher_says_at_start_up_that_events_are_not_sent_to_a_broker(
    fresh_database_url, tmp_path
):
    log_path = tmp_path / "relay.log"
    env = _env(DATABASE_URL=fresh_database_url, ORDERS_PUBLISHER="log", ORDERS_LOG_FORMAT="json")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(RELAY, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        await wait_for(lambda: _read(log_path, "relay started"), timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert proc.returncode == 0
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    [announced] = [line for line in lines if line["msg"].startswith("publisher log:")]
    assert announced["level"] == "warning" and "not sent to a broker" in announced["msg"]


async def _read(path, text: str) -> bool:
    return text in path.read_text()
