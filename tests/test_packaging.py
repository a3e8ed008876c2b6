"""What ships beside the code: the licence pyproject names, a changelog entry for the version, and the
docs pages' vendored UIs inside the package with their licences."""

import re
import tomllib
from pathlib import Path

import orders_svc
from orders_svc.api.operations import DOCS_ASSETS, DOCS_DIR

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_licence_file_is_the_one_pyproject_names():
    assert PYPROJECT["project"]["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Permission is hereby granted, free of charge" in text


def test_the_changelog_has_an_entry_for_the_packages_version():
    versions = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert versions[0] == "Unreleased"
    assert orders_svc.__version__ in versions


def test_each_vendored_ui_ships_with_its_licence_inside_the_package():
    assert DOCS_DIR.is_relative_to(Path(orders_svc.__file__).parent)
    for vendored in {Path(path).parent for path in DOCS_ASSETS.values()} - {Path(".")}:
        assert (DOCS_DIR / vendored / "LICENSE").is_file(), vendored
    for path in DOCS_ASSETS.values():
        assert (DOCS_DIR / path).stat().st_size > 100, path
