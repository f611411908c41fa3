"""Runs the ``>>>`` examples of every documentation page as doctests, and the shell sessions
marked ``run``.

pytest collects each ``docs/**/*.md`` page that holds a ```` ```pycon ```` block. Only those
blocks run: the fences are stripped, so an example needs no blank line before its closing fence,
and ``>>>`` text in any other block (```` ```python ````, ```` ```text ````) is left alone. The
blocks of one page share their names, in order, as in one interactive session. Line numbers in
failures are the page's own.

A block whose opening fence reads ```` ```pycon norun ```` is shown but not run (for output that
depends on the machine); keep those rare and say why next to them. The pages show Linux's
values and messages, so their examples run on Linux only.

A ```` ```console run ```` block is a shell session that runs: each ``$ `` line is run by bash
in an empty temporary directory (the ``ka`` command of this Python first on PATH, stdout and
stderr together, no colour) and its output compared with the lines below it up to the next
``$ `` (``...`` matches anything, whitespace is normalised). Only blocks marked ``run`` run (a
shell session may need root or change the machine: running it is a choice made per block).

Every other code block of the site is either an example file the tests run (```` ```{literalinclude} ````)
or marked ``norun`` after its language (```` ```python norun ````, ```` ```shell norun ````);
``text`` blocks (output, diagrams, synopses) are not code. ``code_blocks`` lists them for the
test that no block is neither (tests/adapters/test_docs.py).
"""

from __future__ import annotations

import ast
import doctest
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

# An opening fence: three or more backticks or colons, then the info string.
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|:{3,})(?P<info>.*)$")
_OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
NORUN = "norun"  # the word after a fence's language that says: shown, not run
RUN = "run"  # the word after ``console`` that says: the tests run this session
PROMPT = "$ "


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

    @property
    def run(self) -> bool:
        return RUN in self.info.split()[1:]


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
        text = self.path.read_text(encoding="utf-8")
        source = pycon_source(text)
        parser = doctest.DocTestParser()
        test = parser.get_doctest(source, {"__name__": "__main__"}, self.path.name, str(self.path), 0)
        if test.examples:
            yield PageExamples.from_parent(self, name=self.path.name, test=test)
        for block in code_blocks(text):
            if block.language == "console" and block.run:
                name = f"{self.path.name}:{block.line}"
                yield ConsoleSession.from_parent(self, name=name, block=block)


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


class PageItem(pytest.Item):
    """An item of a page: its failure is the page's expected and actual output, not a traceback."""

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, DocExampleFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))


class PageExamples(PageItem):
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

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"examples in {self.path.name}"


class DocExampleFailure(Exception):
    """A documentation example whose output differs from what the page shows."""


class Command(NamedTuple):
    """One ``$ `` line of a console block, the output shown under it, and its line on the page."""

    line: int
    command: str
    output: str


def console_commands(block: CodeBlock) -> list[Command]:
    """The commands of a console block and the output each shows (the lines up to the next ``$ ``)."""
    commands: list[Command] = []
    for number, text in enumerate(block.text.splitlines(), block.line + 1):
        if text.startswith(PROMPT):
            commands.append(Command(number, text[len(PROMPT) :], ""))
        elif commands:
            last = commands[-1]
            commands[-1] = last._replace(output=last.output + text + "\n")
    return commands


class ConsoleSession(PageItem):
    def __init__(self, *, block: CodeBlock, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.block = block

    def runtest(self) -> None:
        if sys.platform != "linux":
            pytest.skip("the documentation's sessions show Linux's values and errors")
        bash = shutil.which("bash")
        if bash is None:
            pytest.skip("no bash to run the session with")
        here = os.path.dirname(sys.executable)
        if shutil.which("ka", path=here) is None:
            pytest.skip(f"the ka command is not installed next to {sys.executable}")
        env = {k: v for k, v in os.environ.items() if k != "KA_POLICY" and k != "FORCE_COLOR"}
        env.update(PATH=here + os.pathsep + env.get("PATH", ""), NO_COLOR="1", LC_ALL="C.UTF-8")
        checker = doctest.OutputChecker()
        failures = []
        for command in console_commands(self.block):
            with tempfile.TemporaryDirectory(prefix="ka-docs-") as where:
                done = subprocess.run(
                    [bash, "-c", command.command],
                    cwd=where,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    timeout=120,
                    check=False,
                )
            if not checker.check_output(command.output, done.stdout, _OPTIONFLAGS):
                failures.append(
                    f"{self.path}, line {command.line}: $ {command.command}\n"
                    f"Expected:\n{command.output}Got (exit {done.returncode}):\n{done.stdout}"
                )
        if failures:
            raise DocExampleFailure("\n".join(failures))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.block.line - 1, f"session at {self.path.name}:{self.block.line}"


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> MarkdownPage | None:
    if file_path.suffix != ".md":
        return None
    text = file_path.read_text(encoding="utf-8")
    if "pycon" in text or re.search(r"^ {0,3}(`{3,}|:{3,})console\b.*\brun\b", text, re.MULTILINE):
        return MarkdownPage.from_parent(parent, path=file_path)
    return None
