"""Schema migrations with yoyo: the same files `yoyo apply` reads, applied from Python."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from yoyo import get_backend, read_migrations

from .resources import migrations_dir


def yoyo_uri(dsn: str) -> str:
    """yoyo picks its driver from the scheme; the service's DSN is plain postgresql://."""
    _, sep, rest = dsn.partition("://")
    if not sep:
        raise ValueError("DATABASE_URL must look like postgresql://user:password@host:port/dbname")
    return f"postgresql+psycopg://{rest}"


@contextmanager
def yoyo_backend(dsn: str) -> Iterator[Any]:
    """yoyo's backend for the database, holding yoyo's migration lock."""
    backend = get_backend(yoyo_uri(dsn))
    try:
        with backend.lock():
            yield backend
    finally:
        backend.connection.close()  # an idle session would block CREATE DATABASE ... TEMPLATE


def apply(dsn: str) -> int:
    """Apply every pending migration under yoyo's lock; returns how many were applied."""
    with yoyo_backend(dsn) as backend:
        pending = backend.to_apply(read_migrations(str(migrations_dir())))
        backend.apply_migrations(pending)
    return len(pending)


def rollback_all(dsn: str) -> int:
    """Roll back every applied migration, newest first; returns how many were rolled back."""
    with yoyo_backend(dsn) as backend:
        applied = backend.to_rollback(read_migrations(str(migrations_dir())))
        backend.rollback_migrations(applied)
    return len(applied)
