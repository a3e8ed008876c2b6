"""Logs as a person at a terminal sees them: text lines by default on a terminal, JSON when not a terminal or
when ORDERS_LOG_FORMAT asks; and a migration is one line, not one per step."""

import json
import os
import pty
import re
import subprocess
import sys

import pytest

MIGRATE = [sys.executable, "-m", "orders_svc.cli", "migrate"]
TEXT_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR) +[\w.]+: ")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("ORDERS_")}
    return {**env, **extra}


def on_a_terminal(command: list[str], env: dict[str, str]) -> list[str]:
    """The lines the command writes to stderr when stderr is a terminal."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal
        )
    finally:
        os.close(terminal)
    chunks = []
    try:
        while chunk := _read(controller):
            chunks.append(chunk)
    finally:
        os.close(controller)
    assert proc.wait(timeout=60) == 0, b"".join(chunks)
    return b"".join(chunks).decode().replace("\r\n", "\n").splitlines()


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the process closed the terminal's other side
        return b""


def test_on_a_terminal_the_logs_are_text_lines_and_a_migration_is_one_of_them(fresh_database_url):
    lines = on_a_terminal(MIGRATE, _env(DATABASE_URL=fresh_database_url))
    assert lines and all(TEXT_LINE.match(line) for line in lines), lines
    assert not [line for line in lines if "yoyo" in line], lines


def test_on_a_terminal_orders_log_format_json_still_gives_json(fresh_database_url):
    lines = on_a_terminal(MIGRATE, _env(DATABASE_URL=fresh_database_url, ORDERS_LOG_FORMAT="json"))
    assert lines and all(json.loads(line)["msg"] for line in lines), lines


@pytest.mark.parametrize("extra", [{}, {"ORDERS_LOG_FORMAT": "json"}])
def test_when_not_a_terminal_the_logs_are_json_lines(empty_database_url, extra):
    env = _env(DATABASE_URL=empty_database_url, **extra)
    result = subprocess.run(MIGRATE, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert [r["msg"] for r in records] == ["migrations applied"], records  # no line per yoyo step
    assert records[0]["count"] >= 6
