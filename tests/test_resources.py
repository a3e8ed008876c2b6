"""Named SQL blocks: loaded once, unique, non-empty, each documented; the shipped directories are found."""

import re
from pathlib import Path

import pytest

from orders_svc import queries
from orders_svc.resources import load_sql, parse_sql_blocks, sql_dir


def test_duplicate_block_names_are_refused():
    text = "-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n"
    with pytest.raises(RuntimeError, match="duplicate SQL block 'a'"):
        parse_sql_blocks(text, "x.sql")


def test_empty_blocks_are_refused():
    with pytest.raises(RuntimeError, match="empty SQL block 'a'"):
        parse_sql_blocks("-- name: a\n-- only a comment\n-- name: b\nSELECT 1;", "x.sql")


def test_blocks_are_split_by_name_and_lose_their_trailing_semicolon():
    blocks = parse_sql_blocks("-- name: a\n-- first\nSELECT 1;\n\n-- name: b\nSELECT 2;\n", "x.sql")
    assert blocks == {"a": "-- first\nSELECT 1", "b": "SELECT 2"}


def test_every_block_has_a_description_line_naming_its_parameters():
    for path in sql_dir().glob("*.sql"):
        for name, statement in parse_sql_blocks(path.read_text(), path.name).items():
            first = statement.splitlines()[0]
            assert first.startswith("-- "), f"{path.name}:{name} has no description line"
            params = set(re.findall(r"\$(\d+)", statement.split("\n", 1)[-1]))
            described = set(
                re.findall(
                    r"\$(\d+)", "\n".join(line for line in statement.splitlines() if line.startswith("--"))
                )
            )
            assert params <= described, f"{path.name}:{name} does not describe {sorted(params - described)}"


def test_every_loaded_block_is_used_by_the_package():
    source = "\n".join(p.read_text() for p in Path(queries.__file__).parent.glob("*.py"))
    unused = [name for name in load_sql() if f'"{name}"' not in source]
    assert unused == []
