"""The Makefile explains itself: a bare `make` lists every target with what it does; `make nats` listens on
loopback only, on the port asked for, and the relay and the watcher follow it."""

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("ORDERS_NATS_URL", "MAKEFLAGS", "NATS_PORT")}
    command = ["make", "--no-print-directory", *args]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_bare_make_prints_help_listing_every_target_with_a_description():
    listed = dict(re.findall(r"^  ([a-z]+) +(\S.*)$", make(), re.M))
    phony = re.search(r"^\.PHONY: (.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert phony is not None
    assert set(listed) == set(phony.group(1).split())
    assert make("help") == make()


def test_make_nats_listens_on_loopback_on_the_port_asked_for_and_the_relay_follows():
    assert "nats-server -js -sd .nats -a 127.0.0.1 -p 4222" in make("-n", "nats")
    assert "-a 127.0.0.1 -p 4300" in make("-n", "nats", "NATS_PORT=4300")
    relay = make("-n", "relay", "NATS_PORT=4300")
    assert "ORDERS_NATS_URL=nats://127.0.0.1:4300 " in relay and "relay --publisher log" in relay
    assert "ORDERS_NATS_URL=nats://127.0.0.1:4300 " in make("-n", "watch", "NATS_PORT=4300")
