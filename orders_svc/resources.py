"""Locating the shipped `sql/` and `migrations/` directories and loading named SQL blocks."""

import re
from pathlib import Path
from typing import LiteralString, cast

_PACKAGE = Path(__file__).resolve().parent
_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def _shipped(name: str) -> Path:
    """The installed wheel carries the directory inside the package; a checkout has it beside the package."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise RuntimeError(f"{name}/ not found next to {_PACKAGE}")


def sql_dir() -> Path:
    return _shipped("sql")


def migrations_dir() -> Path:
    return _shipped("migrations")


def migration_ids() -> list[str]:
    """The ids yoyo records for the shipped migrations (file names without `.sql`), oldest first."""
    files = migrations_dir().glob("*.sql")
    return sorted(p.name.removesuffix(".sql") for p in files if not p.name.endswith(".rollback.sql"))


def parse_sql_blocks(text: str, source: str) -> dict[str, LiteralString]:
    """Split `-- name: x` blocks; a duplicate name or an empty block is an error."""
    blocks: dict[str, LiteralString] = {}
    parts = _NAME.split(text)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        statement = body.strip().rstrip(";").strip()
        if name in blocks:
            raise RuntimeError(f"duplicate SQL block {name!r} in {source}")
        if not statement or all(line.lstrip().startswith("--") for line in statement.splitlines()):
            raise RuntimeError(f"empty SQL block {name!r} in {source}")
        blocks[name] = cast(LiteralString, statement)
    return blocks


def load_sql() -> dict[str, LiteralString]:
    """Every block of every `sql/*.sql` file, by name; names are unique across files."""
    queries: dict[str, LiteralString] = {}
    for path in sorted(sql_dir().glob("*.sql")):
        for name, statement in parse_sql_blocks(path.read_text(), path.name).items():
            if name in queries:
                raise RuntimeError(f"duplicate SQL block {name!r} in {path.name}")
            queries[name] = statement
    return queries
