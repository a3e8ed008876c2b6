"""The service under test and its database: a fresh database for the run, `orders-svc serve` on it, and the
PostgreSQL server process behind it (for its CPU time)."""

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import payments
import psutil
import psycopg
from options import Options

from orders_svc.embedded import embedded_database

from servers import create_database, drop_database, free_port, wait_until_ready

READY_SECONDS = 60


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A DSN for an empty database that exists only for this run: a new database on DATABASE_URL's server,
    dropped afterwards, or else an embedded PostgreSQL in a temporary directory."""
    server = os.environ.get("DATABASE_URL")
    if server:
        name = f"orders_bench_{uuid.uuid4().hex[:8]}"
        dsn = create_database(server, name)
        try:
            yield dsn
        finally:
            drop_database(server, name)
        return
    with tempfile.TemporaryDirectory(prefix="orders-bench-") as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 (the embedded server may run as its own system user)
        with embedded_database(Path(tmp)) as dsn:
            yield dsn


@contextlib.contextmanager
def service(options: Options, dsn: str, log_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`orders-svc serve --migrate` on DATABASE_URL=dsn; yields its base URL once /readyz answers."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": dsn, "ORDERS_WEBHOOK_SECRETS": payments.SECRET}
    if options.pool_max is not None:
        env["ORDERS_POOL_MAX"] = str(options.pool_max)
    if options.log_level is not None:
        env["ORDERS_LOG_LEVEL"] = options.log_level
    command = [sys.executable, "-m", "orders_svc.cli", "serve", "--migrate", "--port", str(port)]
    command += ["--workers", str(options.workers)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_ready(base, proc, log_path, timeout=READY_SECONDS)
        except RuntimeError:
            exited = proc.poll()
            state = f"exited with {exited}" if exited is not None else f"was not ready in {READY_SECONDS} s"
            sys.exit(f"bench: the service {state}; see {log_path}")
        yield base, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def postmaster_of(dsn: str) -> int | None:
    """The PostgreSQL server process behind dsn when it runs on this machine (for its CPU time), else None."""
    with psycopg.connect(dsn) as conn, contextlib.suppress(psutil.Error):
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        backend = psutil.Process(row[0])  # looked at while the session is open, so the backend is alive
        parent = backend.parent()
        # A pid from another namespace (a container) would name some unrelated local process.
        if parent is not None and "postgres" in parent.name() and "postgres" in " ".join(backend.cmdline()):
            return int(parent.pid)
    return None
