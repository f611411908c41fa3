"""A release's notes from CHANGELOG.md, after checking that the tag names the package's version.

``python tools/release_notes.py v1.2.0`` prints the body of the ``## 1.2.0`` section of
CHANGELOG.md (Keep a Changelog: ``## 1.2.0 - 2027-01-15`` or ``## [1.2.0] - ...``) and exits 0;
it exits 1 with a sentence saying why when the tag is not ``v`` + ``ka.__version__`` (read from
src/ka/__init__.py without importing ka), or the changelog has no section for that version, or
the section is empty. The release workflow (.github/workflows/wheels.yml) runs it on a ``v*`` tag
before anything is published, and uses what it prints as the GitHub release's notes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_version(init: Path = ROOT / "src" / "ka" / "__init__.py") -> str:
    """``__version__`` as written in the package (the one place it is written)."""
    found = re.search(r'^__version__ = "([^"]+)"', init.read_text(encoding="utf-8"), re.MULTILINE)
    if found is None:
        raise ValueError(f'{init} has no __version__ = "..." line')
    return found[1]


def section(changelog: str, version: str) -> str:
    """The text under ``## version`` (up to the next ``## ``), stripped; ValueError if none."""
    heading = re.compile(rf"^## \[?{re.escape(version)}\]?(?:\s+-\s+.*)?$", re.MULTILINE)
    found = heading.search(changelog)
    if found is None:
        raise ValueError(
            f"CHANGELOG.md has no section '## {version} - DATE': move the Unreleased lines there"
        )
    rest = changelog[found.end() :]
    following = re.search(r"^## ", rest, re.MULTILINE)
    body = (rest[: following.start()] if following else rest).strip()
    if not body:
        raise ValueError(f"CHANGELOG.md's section for {version} is empty")
    return body


def notes(tag: str, changelog: str, version: str) -> str:
    """The release notes for ``tag``; ValueError when the tag does not name ``version``."""
    if tag != f"v{version}":
        raise ValueError(
            f"the tag {tag!r} does not name the package's version {version!r}: expected 'v{version}'"
        )
    return section(changelog, version)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: release_notes.py TAG (e.g. v1.2.0)", file=sys.stderr)
        return 2
    try:
        print(notes(argv[0], (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"), package_version()))
    except ValueError as error:
        print(f"release_notes.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
