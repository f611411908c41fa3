"""The metadata the package index shows, read from built distributions (tools/check_dist.sh).

For each sdist (PKG-INFO) and wheel (METADATA), checked against pyproject.toml:

- ``Requires-Python``, the ``Programming Language :: Python :: 3.x`` classifiers and the
  cibuildwheel ``build`` list name the same CPythons (the support policy), with the free-threading
  classifier when a ``cp3XXt`` build is in the list;
- every classifier is one the index knows (trove-classifiers), the license is an SPDX expression
  with its file, and the five project URLs are there, all https;
- the description renders as the index renders it (readme_renderer), and every link in the
  rendered HTML is absolute or an anchor; a link into the documentation site names a page that
  docs/ has, a link into the source repository names a file the sdist has.

Usage: ``python tools/check_metadata.py SDIST WHEEL...`` (exit status 0 when all hold).
"""

from __future__ import annotations

import email.parser
import email.policy
import re
import sys
import tarfile
import tomllib
import zipfile
from email.message import Message
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
URL_NAMES = ("Homepage", "Documentation", "Source", "Issues", "Changelog")


class Links(HTMLParser):
    """Every href and src of an HTML fragment."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [value for name, value in attrs if name in ("href", "src") and value]


def read_metadata(path: Path) -> tuple[Message, set[str]]:
    """The distribution's metadata and, for an sdist, the paths of its files (else empty)."""
    parser = email.parser.Parser(policy=email.policy.compat32)
    if path.name.endswith(".tar.gz"):
        with tarfile.open(path) as tar:
            members = [m.name for m in tar.getmembers() if m.isfile()]
            top = members[0].split("/", 1)[0]
            info = tar.extractfile(f"{top}/PKG-INFO")
            assert info is not None
            files = {name.split("/", 1)[1] for name in members if "/" in name}
            return parser.parsestr(info.read().decode()), files
    with zipfile.ZipFile(path) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        return parser.parsestr(wheel.read(name).decode()), set()


def check(metadata: Message, sdist_files: set[str]) -> list[str]:
    """The problems with one distribution's metadata (empty when it is right)."""
    import readme_renderer.markdown
    from trove_classifiers import classifiers as known

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    problems: list[str] = []

    # The support policy, three ways.
    minimum = re.fullmatch(r">=3\.(\d+)", metadata["Requires-Python"] or "")
    classifiers = metadata.get_all("Classifier") or []
    version = re.compile(r"Programming Language :: Python :: 3\.(\d+)")
    minors = sorted(int(m[1]) for c in classifiers if (m := version.fullmatch(c)))
    build = project["tool"]["cibuildwheel"]["build"].split()
    built = sorted({int(m[1]) for b in build if (m := re.fullmatch(r"cp3(\d+)-\*", b))})
    threaded = sorted({int(m[1]) for b in build if (m := re.fullmatch(r"cp3(\d+)t-\*", b))})
    if minimum is None:
        problems.append(f"Requires-Python is {metadata['Requires-Python']!r}, expected '>=3.N'")
    elif minors != built or not minors or minors[0] != int(minimum[1]):
        problems.append(f"classifiers name 3.{minors}, the wheels 3.{built}, Requires-Python {minimum[0]}")
    free_threading = "Programming Language :: Python :: Free Threading ::"
    if threaded and not any(c.startswith(free_threading) for c in classifiers):
        problems.append(f"free-threaded wheels (3.{threaded}t) but no Free Threading classifier")
    problems += [f"unknown classifier {c!r}" for c in classifiers if c not in known]

    if metadata["License-Expression"] != project["project"]["license"]:
        problems.append(f"License-Expression is {metadata['License-Expression']!r}")
    if "LICENSE" not in (metadata.get_all("License-File") or []):
        problems.append("no License-File: LICENSE")

    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or [])
    problems += [
        f"Project-URL {n} is missing or not https: {urls.get(n)!r}"
        for n in URL_NAMES
        if not urls.get(n, "").startswith("https://")
    ]
    if problems:
        return problems

    # The description, rendered as the index renders it.
    if metadata["Description-Content-Type"] != "text/markdown":
        return [f"Description-Content-Type is {metadata['Description-Content-Type']!r}"]
    body = metadata.get_payload()
    assert isinstance(body, str)
    html = readme_renderer.markdown.render(body)
    if html is None:
        return ["the description does not render"]
    parser = Links()
    parser.feed(html)
    docs = urls["Documentation"].rstrip("/") + "/"
    source = urls["Source"].rstrip("/") + "/blob/main/"
    for link in parser.found:
        target = link.split("#", 1)[0]
        if link.startswith("#"):
            continue
        if not link.startswith("https://"):
            problems.append(f"a relative or non-https link, broken on the index's page: {link}")
        elif target.startswith(docs):
            page = target.removeprefix(docs)
            page = page + "index.html" if page == "" or page.endswith("/") else page
            path = "docs/" + page.removesuffix(".html") + ".md"
            if not page.endswith(".html") or path not in sdist_files:
                problems.append(f"{link}: no page {path} in docs/")
        elif target.startswith(source) and target.removeprefix(source).rstrip("/") not in sdist_files | {
            f.rsplit("/", 1)[0] for f in sdist_files
        }:
            problems.append(f"{link}: no such file or folder in the sdist")
    print(f"  {len(classifiers)} classifiers, {len(urls)} urls, {len(parser.found)} links in the description")
    return problems


def main(paths: list[str]) -> int:
    dists = [Path(p) for p in paths]
    sdists = [d for d in dists if d.name.endswith(".tar.gz")]
    if len(sdists) != 1:
        sys.exit("usage: check_metadata.py SDIST WHEEL... (one sdist: its files resolve the links)")
    _, sdist_files = read_metadata(sdists[0])
    failed = False
    for dist in dists:
        print(dist.name)
        metadata, _ = read_metadata(dist)
        for problem in check(metadata, sdist_files):
            print(f"  FAIL: {problem}")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
