"""sql/health.sql: what readiness asks the database."""

import asyncpg

from ..db import Connection
from . import statement

APPLIED_MIGRATIONS = statement("applied_migrations")


async def applied_migrations(conn: Connection) -> set[str]:
    """Migration ids yoyo recorded as applied; none when it never ran here (its table does not exist)."""
    try:
        return {row[0] for row in await conn.fetch(APPLIED_MIGRATIONS)}
    except asyncpg.UndefinedTableError:
        return set()
