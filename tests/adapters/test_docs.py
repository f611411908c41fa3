"""The documentation: its example files run, every one is shown on a page, and the doctest
collector of docs/conftest.py runs exactly the pycon blocks."""

from __future__ import annotations

import argparse
import configparser
import importlib.util
import os
import posixpath
import re
import shlex
import shutil
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


def test_collector_runs_the_console_sessions_marked_run(
    collector: ModuleType, pytester: pytest.Pytester
) -> None:
    pytester.makeconftest((DOCS / "conftest.py").read_text(encoding="utf-8"))
    pytester.makefile(
        ".md",
        page="\n".join(
            [
                "# Page",
                "```console run",
                "$ echo one two; echo three >&2",
                "one ...",
                "three",
                "$ printf 'a\\nb\\n' | wc -l",
                "3",
                "```",
                "```console norun",
                "$ exit 1",
                "```",
                "```console",
                "$ exit 1",
                "```",
            ]
        ),
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    if sys.platform != "linux":
        result.assert_outcomes(skipped=1)
        return
    result.assert_outcomes(failed=1)  # one session: the block marked run, wrong in its second line
    result.stdout.fnmatch_lines(["*page.md, line 6: $ printf*", "Expected:", "3", "Got (exit 0):", "2"])
    assert "line 3" not in result.stdout.str()  # the first command's output matched


def test_readme_links_into_the_docs_resolve() -> None:
    """The README points newcomers into docs/; each of its relative links names a file that exists."""
    readme = DOCS.parent / "README.md"
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme.read_text(encoding="utf-8"))
    local = [link for link in links if "://" not in link]
    missing = [link for link in local if not (readme.parent / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


# Languages whose blocks are not code: output, diagrams, synopses.
NOT_CODE = {"text"}
# Configuration files shown on the pages (a systemd unit, a Kubernetes manifest): not run, but
# every one is checked by test_config_blocks_are_valid below.
CONFIG = {"ini", "yaml"}
# The languages a code block may have: pycon runs; `console` runs when marked `run`; the rest are
# shown (shell commands as `shell`, a session with `$ ` prompts and its output as `console`).
LANGUAGES = {"pycon", "python", "shell", "console", "c", "text"} | CONFIG
# The words a fence may carry after its language: `norun` anywhere, `run` on a console block.
MARKERS = {"norun", "run"}
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
            words = block.info.split()[1:]
            if block.language not in LANGUAGES:
                neither.append(f"{where}: language {block.language!r}, expected one of {sorted(LANGUAGES)}")
            elif set(words) - MARKERS or (block.run and block.language != "console") or len(words) > 1:
                # a word the collector does not know (`pycon skip`) would leave the block running
                neither.append(
                    f"{where}: {block.info!r}: after the language only `norun` (or `run` on console)"
                )
            elif block.language == "pycon" or block.language in NOT_CODE | CONFIG:
                continue
            elif block.language == "console" and block.run:
                continue  # run by docs/conftest.py
            elif not block.norun:
                language = block.language
                runs = "`console run` (the docs tests run it) or " if language == "console" else ""
                neither.append(f"{where}: a {language} block no test runs: mark it {runs}`{language} norun`")
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


# -- configuration files on the pages --------------------------------------------------------------
# Not run (a unit file, a manifest), but each is read as its software reads it, and every `ka`
# command line in it is taken by ka's own parser.

SYSTEMD_SECTIONS = {"Unit", "Service", "Socket", "Timer", "Install", "Slice", "Scope"}


def _config_blocks(collector: ModuleType, language: str) -> list[tuple[str, str]]:
    """(where, text) of every block of ``language`` on the site and the README."""
    found = []
    for page in _pages_and_readme():
        for block in collector.code_blocks(page.read_text(encoding="utf-8")):
            if block.language == language:
                found.append((f"{page.relative_to(DOCS.parent)}:{block.line}", block.text))
    return found


def _ka_command_line(argv: list[str], where: str) -> argparse.Namespace:
    """A ``ka`` command written in a configuration file: ka's parser takes it, and the values
    ``ka exporter`` checks only when it runs (the address, the interval, the rules) are valid."""
    from ka.cli import audit, checks, exporter
    from ka.cli.parser import ArgumentError, build_parser

    try:
        args = build_parser().parse_args(argv)
        if args.command == "exporter":
            exporter.listen_address(args.listen)
            if args.interval is not None:
                checks.parse_duration(args.interval, "--interval")
            audit.rules_from(args)
    except (ArgumentError, checks.UsageError) as error:
        pytest.fail(f"{where}: ka {shlex.join(argv)}: {error}")
    return args


def _ka_commands(script: str) -> list[list[str]]:
    """The ``ka ...`` commands of a shell script (``exec ka ...`` too)."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            commands.append([])
        else:
            commands[-1].append(token)
    found = []
    for words in commands:
        if words[:1] == ["exec"]:
            words = words[1:]
        if words and posixpath.basename(words[0]) == "ka":
            found.append(words[1:])
    return found


def _capabilities(names: list[str], where: str) -> set[str]:
    """Capability names as systemd (``CAP_SYS_PTRACE``) or Kubernetes (``SYS_PTRACE``) write
    them, each checked against the kernel's list; returned without the prefix."""
    from ka.live.procfs import CAPABILITY_NAMES

    bare = {name.upper().removeprefix("CAP_") for name in names}
    unknown = {name for name in bare if name.lower() not in CAPABILITY_NAMES}
    assert not unknown, f"{where}: unknown capabilities {sorted(unknown)}"
    return bare


def test_unit_files_are_valid(collector: ModuleType, tmp_path: Path) -> None:
    """Every ``ini`` block is a systemd unit: sections systemd knows, a ``ka`` ExecStart its
    parser takes, capabilities that exist, and no complaint from ``systemd-analyze verify``
    (where systemd is installed; the ExecStart program is this environment's ``ka``)."""
    units = _config_blocks(collector, "ini")
    assert units, "no unit file on the pages (docs/audit.md shows the exporter's)"
    analyze = shutil.which("systemd-analyze")
    ka_program = shutil.which("ka", path=os.path.dirname(sys.executable))
    for where, text in units:
        unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
        unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys keep their case
        unit.read_string(text)
        assert set(unit.sections()) <= SYSTEMD_SECTIONS and unit.has_section("Service"), where
        program, *argv = shlex.split(unit["Service"]["ExecStart"])
        # a unit's paths are POSIX paths wherever the test runs (ntpath.isabs('/usr') is False on 3.13+)
        assert posixpath.isabs(program) and posixpath.basename(program) == "ka", where
        _ka_command_line(argv, where)
        for key in ("CapabilityBoundingSet", "AmbientCapabilities"):
            if key in unit["Service"]:
                _capabilities(unit["Service"][key].split(), where)
        if analyze is None or ka_program is None:
            continue
        named = re.match(r"#\s*/etc/systemd/system/(\S+\.service)", text)
        path = tmp_path / (named[1] if named else "docs-example.service")
        path.write_text(text.replace(program, ka_program), encoding="utf-8")
        done = subprocess.run(
            [analyze, "verify", "--man=no", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        about_it = [line for line in (done.stdout + done.stderr).splitlines() if path.name in line]
        assert done.returncode == 0 and not about_it, f"{where}: systemd-analyze verify: {done.stderr}"


def test_manifests_are_valid(collector: ModuleType) -> None:
    """Every ``yaml`` block parses; a Kubernetes workload's selector matches its pods' labels, the
    ``ka`` command of a container is taken by ka's parser and listens on a port the container
    declares, and the capabilities it adds exist."""
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (the peers dependency group)")
    manifests = _config_blocks(collector, "yaml")
    assert manifests, "no manifest on the pages (docs/audit.md shows the exporter's DaemonSet)"
    for where, text in manifests:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
        assert documents, where
        for document in documents:
            assert {"apiVersion", "kind", "metadata"} <= set(document), where
            if document["kind"] not in ("DaemonSet", "Deployment", "StatefulSet"):
                continue
            spec = document["spec"]
            labels = spec["template"]["metadata"]["labels"]
            assert spec["selector"]["matchLabels"].items() <= labels.items(), f"{where}: selector"
            for container in spec["template"]["spec"]["containers"]:
                command = container.get("command", [])
                script = command[-1] if command[:1] in (["sh"], ["bash"]) and "-c" in command else None
                lines = _ka_commands(script) if script else []
                ports = {port["containerPort"] for port in container.get("ports", [])}
                for argv in lines:
                    args = _ka_command_line(argv, where)
                    if getattr(args, "listen", None):
                        assert args.listen.rpartition(":")[2] in {str(p) for p in ports}, f"{where}: port"
                added = container.get("securityContext", {}).get("capabilities", {}).get("add", [])
                _capabilities(added, where)


def test_the_exporters_unit_and_daemonset_grant_the_same_capabilities(collector: ModuleType) -> None:
    """docs/audit.md: root needs CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, nothing else; the unit and
    the DaemonSet it shows must say the same."""
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (the peers dependency group)")
    page = "docs/audit.md"
    (unit_text,) = [text for where, text in _config_blocks(collector, "ini") if where.startswith(page)]
    (manifest,) = [text for where, text in _config_blocks(collector, "yaml") if where.startswith(page)]
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(unit_text)
    service = unit["Service"]
    bounding = _capabilities(service["CapabilityBoundingSet"].split(), page)
    ambient = _capabilities(service["AmbientCapabilities"].split(), page)
    (container,) = yaml.safe_load(manifest)["spec"]["template"]["spec"]["containers"]
    capabilities = container["securityContext"]["capabilities"]
    assert capabilities["drop"] == ["ALL"]
    assert (
        bounding == ambient == _capabilities(capabilities["add"], page) == {"SYS_PTRACE", "DAC_READ_SEARCH"}
    )
