"""The command line as a user runs it: embedded serve, migrate, yoyo apply, configuration errors."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from orders_svc.migrate import yoyo_uri
from orders_svc.resources import migrations_dir

from conftest import free_port, public_tables, wait_until_ready

CLI = [sys.executable, "-m", "orders_svc.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("ORDERS_")}
    return {**env, "ORDERS_LOG_LEVEL": "WARNING", **extra}


def _serve(data_dir: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [*CLI, "serve", "--port", str(port)],
            env=_env(ORDERS_DATA_DIR=str(data_dir)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def test_serve_without_database_url_runs_on_an_embedded_postgres_that_keeps_its_data(tmp_path):
    data_dir, port, log_path = tmp_path / "data", free_port(), tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    headers = {"X-Tenant-Id": "cli", "Idempotency-Key": "k"}

    proc = _serve(data_dir, port, log_path)
    try:
        wait_until_ready(base, proc, log_path, timeout=90)
        created = httpx.post(f"{base}/orders", headers=headers, content=b"{}")
        assert created.status_code == 201
    finally:
        assert _stop(proc) == 0, log_path.read_text()
    assert not (data_dir / "pg" / "postmaster.pid").exists(), "embedded PostgreSQL left running"

    proc = _serve(data_dir, port, log_path)
    try:
        wait_until_ready(base, proc, log_path, timeout=90)
        again = httpx.get(f"{base}{created.headers['location']}", headers={"X-Tenant-Id": "cli"})
        assert again.status_code == 200
        assert again.json()["id"] == created.json()["id"]
    finally:
        assert _stop(proc) == 0, log_path.read_text()


async def test_migrate_applies_the_schema_to_database_url(empty_database_url):
    subprocess.run([*CLI, "migrate"], env=_env(DATABASE_URL=empty_database_url), check=True, timeout=60)
    assert {"orders", "outbox", "idempotency_keys"} <= await public_tables(empty_database_url)


async def test_yoyo_apply_reads_the_same_migrations(empty_database_url):
    yoyo = shutil.which("yoyo", path=str(Path(sys.executable).parent))
    assert yoyo is not None
    subprocess.run(
        [yoyo, "apply", "--batch", "--database", yoyo_uri(empty_database_url), str(migrations_dir())],
        env=_env(),
        check=True,
        timeout=60,
        capture_output=True,
    )
    assert {"orders", "outbox", "idempotency_keys"} <= await public_tables(empty_database_url)


def test_a_bad_setting_stops_the_service_with_a_clear_message():
    result = subprocess.run(
        [*CLI, "serve"], env=_env(ORDERS_POOL_MAX="lots"), capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "configuration error: ORDERS_POOL_MAX='lots' is not an integer" in result.stderr


def test_the_served_app_collects_cycles_rarely_and_freezes_its_startup_objects():
    """What uvicorn's workers run (app_from_env): young collections every 10,000 net allocations, not 700,
    and the objects alive at start-up moved out of the collector's way (gc.freeze)."""
    probe = (
        "import gc; from orders_svc.app import app_from_env; "
        "before = gc.get_threshold(); app_from_env(); "
        "print(before[0], gc.get_threshold()[0], gc.get_freeze_count())"
    )
    env = _env(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")  # the app connects only in its lifespan
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    before, after, frozen = map(int, out.stdout.split())
    assert (before, after) == (700, 10_000)
    assert frozen > 10_000
