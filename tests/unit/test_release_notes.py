"""tools/release_notes.py: a tag publishes only the version it names, with its changelog section."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "release_notes.py"

pytestmark = pytest.mark.skipif(not TOOL.exists(), reason="tools/ is not next to the tests")

CHANGELOG = """# Changelog

## Unreleased

- next thing

## 1.2.0 - 2027-01-15

### Added

- one thing

## [1.1.0] - 2026-12-20

- an older thing

## 1.0.0 - 2026-12-01
"""


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("release_notes", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["release_notes"] = module
    spec.loader.exec_module(module)
    return module


def test_the_section_of_the_tagged_version(tool: ModuleType) -> None:
    assert tool.notes("v1.2.0", CHANGELOG, "1.2.0") == "### Added\n\n- one thing"
    assert tool.notes("v1.1.0", CHANGELOG, "1.1.0") == "- an older thing"


@pytest.mark.parametrize(
    ("tag", "version", "message"),
    [
        ("v1.2.1", "1.2.0", "the tag 'v1.2.1' does not name the package's version '1.2.0'"),
        ("1.2.0", "1.2.0", "expected 'v1.2.0'"),
        ("v1.3.0", "1.3.0", "no section '## 1.3.0 - DATE'"),
        ("v1.0.0", "1.0.0", "section for 1.0.0 is empty"),
    ],
)
def test_a_tag_that_cannot_be_released_says_why(
    tool: ModuleType, tag: str, version: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        tool.notes(tag, CHANGELOG, version)


def test_the_version_is_read_from_the_package(tool: ModuleType) -> None:
    import ka

    assert tool.package_version() == ka.__version__
