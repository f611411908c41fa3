"""The documentation: its example files run, every one is shown on a page, and the doctest
collector of docs/conftest.py runs exactly the pycon blocks."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest_plugins = ["pytester"]

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLES = DOCS / "examples"

pytestmark = pytest.mark.skipif(not DOCS.is_dir(), reason="no docs/ next to tests/ (an installed copy)")

# The example files this suite runs as they are, and what each prints when it works.
RUN_AS_SCRIPTS = {
    "http_server_keepalive.py": "server side carries the policy: True 60/10/5",
    "asyncio_echo.py": "server side carries the policy, and echoes: True hello",
}


# The directive's opening fence: ```{literalinclude} ../examples/FILE (or with colons).
_INCLUDE = re.compile(r"^ {0,3}(?:`{3,}|:{3,})\{literalinclude\}\s+(\S+)", re.MULTILINE)


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)


@pytest.mark.skipif(sys.platform != "linux", reason="the examples print Linux's mode and values")
@pytest.mark.parametrize("name", sorted(RUN_AS_SCRIPTS))
def test_example_runs(name: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert RUN_AS_SCRIPTS[name] in done.stdout, done.stdout
    assert "mode: inherit" in done.stdout, done.stdout


def test_every_example_is_shown_on_a_page() -> None:
    shown = set()
    for page in _pages():
        for target in _INCLUDE.findall(page.read_text(encoding="utf-8")):
            shown.add((page.parent / target).resolve())
    examples = {p.resolve() for p in EXAMPLES.glob("*") if p.is_file() and p.name != "__init__.py"}
    assert not examples - shown, f"example files no page shows: {sorted(p.name for p in examples - shown)}"
    assert all(p.exists() for p in shown), f"pages show missing files: {sorted(map(str, shown - examples))}"


@pytest.fixture(scope="module")
def collector() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_conftest", DOCS / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_collector_runs_only_pycon_blocks(collector: ModuleType) -> None:
    page = "\n".join(
        [
            "# Title",
            ">>> outside_any_block()",  # prose: not run
            "```python",
            ">>> in_a_python_block()",
            "```",
            "```` ```pycon ```` is inline code, not a fence",
            "```pycon",
            ">>> 1 + 1",
            "2",
            "```",  # no blank line before the closing fence
            "````pycon norun",
            ">>> machine_dependent()",
            "````",
            ":::{code-block} text",
            ">>> in_a_colon_fence()",
            ":::",
        ]
    )
    source = collector.pycon_source(page)
    lines = source.splitlines()
    assert len(lines) == len(page.splitlines())  # line numbers of failures are the page's own
    assert [(i, line) for i, line in enumerate(lines) if line] == [(7, ">>> 1 + 1"), (8, "2")]


def test_collector_reports_a_wrong_example(collector: ModuleType, pytester: pytest.Pytester) -> None:
    pytester.makeconftest((DOCS / "conftest.py").read_text(encoding="utf-8"))
    pytester.makefile(".md", page="# Page\n\n```pycon\n>>> 6 * 7\n41\n```\n\n```pycon\n>>> 1\n1\n```\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    if sys.platform != "linux":
        result.assert_outcomes(skipped=1)
        return
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*page.md*line 4*", "*Expected:*", "*41*", "*Got:*", "*42*"])


def test_readme_links_into_the_docs_resolve() -> None:
    """The README points newcomers into docs/; each of its relative links names a file that exists."""
    readme = DOCS.parent / "README.md"
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme.read_text(encoding="utf-8"))
    local = [link for link in links if "://" not in link]
    missing = [link for link in local if not (readme.parent / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


# Languages whose blocks are not code: output, diagrams, synopses.
NOT_CODE = {"text"}
# The languages a code block may have: pycon runs; the rest are shown (shell commands as `shell`,
# a session with `$ ` prompts and its output as `console`).
LANGUAGES = {"pycon", "python", "shell", "console", "c", "text"}
# Directives whose body is not shown as code.
NOT_SHOWN = ("{eval-rst}", "{toctree}", "{include}")


def _pages_and_readme() -> list[Path]:
    return [*_pages(), DOCS.parent / "README.md"]


def _examples_the_tests_run() -> set[str]:
    """Example files a test runs: the scripts above, and files another test module names."""
    named = set(RUN_AS_SCRIPTS)
    tests = [p for p in (DOCS.parent / "tests").rglob("*.py") if p.name != Path(__file__).name]
    sources = "\n".join(p.read_text(encoding="utf-8") for p in tests)
    named |= {p.name for p in EXAMPLES.glob("*.py") if p.name in sources or p.stem in sources}
    return named


def test_every_code_block_runs_or_says_it_does_not(collector: ModuleType) -> None:
    """Issue 23: every block of the site (and the README) is executed by the tests (a pycon
    session, an example file a test runs) or marked ``norun``; none is neither."""
    run = _examples_the_tests_run()
    neither: list[str] = []
    for page in _pages_and_readme():
        for block in collector.code_blocks(page.read_text(encoding="utf-8")):
            where = f"{page.relative_to(DOCS.parent)}:{block.line}"
            if block.info.startswith(NOT_SHOWN):
                continue
            if block.info.startswith("{literalinclude}"):
                name = Path(block.info.split()[1]).name
                if name not in run:
                    neither.append(f"{where}: {name} is shown but no test runs it")
                continue
            if block.language not in LANGUAGES:
                neither.append(f"{where}: language {block.language!r}, expected one of {sorted(LANGUAGES)}")
            elif block.language == "pycon" or block.language in NOT_CODE:
                continue
            elif not block.norun:
                language = block.language
                neither.append(f"{where}: a {language} block no test runs: mark it `{language} norun`")
    assert not neither, "\n".join(neither)


def test_shown_python_parses(collector: ModuleType) -> None:
    """The python blocks that are not run are still Python (a top-level ``await`` stands for code
    inside a coroutine) and import the libraries they use (a block may continue the page's example
    above it, which imports ka)."""
    import ast

    unimported: list[str] = []
    for page in _pages_and_readme():
        for block in collector.code_blocks(page.read_text(encoding="utf-8")):
            if block.language != "python":
                continue
            where = f"{page.relative_to(DOCS.parent)}:{block.line}"
            try:
                tree = compile(block.text, where, "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            except SyntaxError as error:
                pytest.fail(f"{where}: not Python: {error}")
            imported = {
                alias.asname or alias.name.split(".")[0]
                for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names
            }
            # a module used as `name.attr` must be imported in the block (asyncpg, sqlalchemy, ...)
            used = {
                node.value.id
                for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            }
            modules = {"asyncpg", "sqlalchemy", "httpx", "httpcore", "aiohttp", "redis", "psycopg", "uvicorn"}
            missing = (used & modules) - imported
            if missing:
                unimported.append(f"{where}: uses {sorted(missing)} without importing it")
    assert not unimported, "\n".join(unimported)
