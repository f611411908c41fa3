"""Runs the ``>>>`` examples of every documentation page as doctests.

pytest collects each ``docs/**/*.md`` page that holds a ```` ```pycon ```` block. Only those
blocks run: the fences are stripped, so an example needs no blank line before its closing fence,
and ``>>>`` text in any other block (```` ```python ````, ```` ```text ````) is left alone. The
blocks of one page share their names, in order, as in one interactive session. Line numbers in
failures are the page's own.

A block whose opening fence reads ```` ```pycon norun ```` is shown but not run (for output that
depends on the machine); keep those rare and say why next to them. The pages show Linux's
values and messages, so their examples run on Linux only.

Every other code block of the site is either an example file the tests run (```` ```{literalinclude} ````)
or marked ``norun`` after its language (```` ```python norun ````, ```` ```shell norun ````);
``text`` blocks (output, diagrams, synopses) are not code. ``code_blocks`` lists them for the
test that no block is neither (tests/adapters/test_docs.py).
"""

from __future__ import annotations

import ast
import doctest
import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

# An opening fence: three or more backticks or colons, then the info string.
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|:{3,})(?P<info>.*)$")
_OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
NORUN = "norun"  # the word after a fence's language that says: shown, not run


class CodeBlock(NamedTuple):
    """A fenced block of a page: its opening line (1-based), info string and text."""

    line: int
    info: str
    text: str

    @property
    def language(self) -> str:
        return self.info.split()[0] if self.info else ""

    @property
    def norun(self) -> bool:
        return NORUN in self.info.split()[1:]


def code_blocks(text: str) -> list[CodeBlock]:
    """Every fenced block of a page (backticks or colons; a MyST directive's too), in order."""
    blocks: list[CodeBlock] = []
    closing: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if closing is None:
            match = _FENCE.match(line)
            if match and not (match["fence"][0] == "`" and "`" in match["info"]):
                closing, info, start, body = match["fence"], match["info"].strip(), number, []
            continue
        stripped = line.strip()
        if stripped.startswith(closing[0] * len(closing)) and set(stripped) <= {closing[0]}:
            blocks.append(CodeBlock(start, info, "\n".join(body)))
            closing = None
            continue
        body.append(line)
    return blocks


def pycon_source(text: str) -> str:
    """The page with every line outside a runnable pycon block blanked, so line numbers hold."""
    out: list[str] = []
    closing: str | None = None  # the fence that ends the block we are in
    running = False
    for line in text.splitlines():
        if closing is None:
            match = _FENCE.match(line)
            # CommonMark: a backtick fence's info string holds no backtick (else it is inline code).
            if match and not (match["fence"][0] == "`" and "`" in match["info"]):
                closing = match["fence"]
                words = match["info"].strip().split()
                running = words[:1] == ["pycon"] and NORUN not in words[1:]
            out.append("")
            continue
        stripped = line.strip()
        if stripped.startswith(closing[0] * len(closing)) and set(stripped) <= {closing[0]}:
            closing, running = None, False
            out.append("")
            continue
        out.append(line if running else "")
    return "\n".join(out) + "\n"


class MarkdownPage(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        source = pycon_source(self.path.read_text(encoding="utf-8"))
        parser = doctest.DocTestParser()
        test = parser.get_doctest(source, {"__name__": "__main__"}, self.path.name, str(self.path), 0)
        if test.examples:
            yield PageExamples.from_parent(self, name=self.path.name, test=test)


def missing_libraries(test: doctest.DocTest) -> list[str]:
    """The libraries a page's examples import (``import x.y``, ``from x import y``; through a
    ``ka.integrations`` module too) that are not installed here."""
    modules: set[str] = set()
    for example in test.examples:
        try:
            tree = ast.parse(example.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module)
    absent: set[str] = set()
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name is None or error.name.split(".")[0] == "ka":
                raise
            absent.add(error.name.split(".")[0])
    return sorted(absent)


class PageExamples(pytest.Item):
    def __init__(self, *, test: doctest.DocTest, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.test = test

    def runtest(self) -> None:
        if sys.platform != "linux":
            pytest.skip("the documentation's examples show Linux's values and errors")
        absent = missing_libraries(self.test)
        if absent:  # a page about a library, where that library is not installed
            pytest.skip(f"needs {', '.join(absent)}, not installed here (the peers dependency group)")
        output: list[str] = []
        runner = doctest.DocTestRunner(optionflags=_OPTIONFLAGS)
        try:
            runner.run(self.test, out=output.append, clear_globs=False)
        finally:
            self.test.globs.clear()
        if runner.failures:
            raise DocExampleFailure("".join(output))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, DocExampleFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"examples in {self.path.name}"


class DocExampleFailure(Exception):
    """A documentation example whose output differs from what the page shows."""


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> MarkdownPage | None:
    if file_path.suffix == ".md" and "pycon" in file_path.read_text(encoding="utf-8"):
        return MarkdownPage.from_parent(parent, path=file_path)
    return None
