"""One typed function per SQL block, a module per `sql/<resource>.sql`: connection first, tenant second.

They return rows, never HTTP errors. Blocks are looked up at import (`statement`), so a renamed or missing
block fails at start-up, not on the first request.
"""

from typing import LiteralString

from ..resources import load_sql

_SQL = load_sql()


def statement(name: str) -> LiteralString:
    return _SQL[name]


def deleted(status: str) -> int:
    """The row count of a `DELETE n` command tag."""
    return int(status.rsplit(" ", 1)[-1])
