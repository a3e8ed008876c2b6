"""The real servers the tests and the benchmark (bench/service.py) start: a free local port, a database of
their own on a PostgreSQL server, and waiting for a started service to answer /readyz."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from psycopg import sql


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_database(dsn: str, name: str) -> str:
    """The same server DSN pointed at another database (works for host and unix-socket DSNs)."""
    if "://" not in dsn:
        return psycopg.conninfo.make_conninfo(dsn, dbname=name)
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def create_database(admin_dsn: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        conn.execute(statement)
    return with_database(admin_dsn, name)


def drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def wait_until_ready(base: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready in {timeout}s: {log_path.read_text()}")


@contextmanager
def serving(database_url: str, log_path: Path, **env: str) -> Iterator[str]:
    """The real `orders-svc serve` (uvicorn, uvloop, httptools) in a subprocess, its output in `log_path`,
    with these environment variables on top; yields its base URL once it is ready."""
    port = free_port()
    environment = {**os.environ, "DATABASE_URL": database_url, "ORDERS_LOG_LEVEL": "WARNING", **env}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orders_svc.cli", "serve", "--port", str(port)],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, proc, log_path)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
