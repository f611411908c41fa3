"""A pytest plugin for mutation runs (``-p ka_mutation_plugin``, set in pyproject's [tool.mutmut]).

- Subprocess calls count: while mutmut maps tests to functions, the functions subprocesses called
  (recorded by sitecustomize.py beside this file) are added to the running test's before mutmut
  reads them, so a mutant in code that only runs under ``python -m ka`` is tested too.
- The suite's order: mutmut names the tests to run in no particular order; they run in the
  suite's (files by path, tests by line: what the tests were written for), and for a mutant the
  files whose tests took least time while mutmut mapped them first, so a killed mutant dies early.
- A failed run can be explained: each pytest process notes the test it starts and how its
  session ended in ``$KA_MUTATION_HITS/../tests.log`` (tools/mutation.py prints the end of it
  when mutmut fails, whose own output is hidden).
- Leftovers can be found: each pytest process writes its pid to ``$KA_MUTATION_HITS/../pids``;
  resources the tests name after their pid (network namespaces, cgroups) that a test killed at
  its time limit could not remove are then removed by tools/mutation.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from pathlib import Path

import pytest


def _hits_dir() -> Path | None:
    hits = os.environ.get("KA_MUTATION_HITS")
    return Path(hits) if hits else None


def pytest_configure(config: pytest.Config) -> None:
    hits = _hits_dir()
    if hits is not None and os.environ.get("MUTANT_UNDER_TEST") == "stats":
        # This process is mutmut's: its calls go to mutmut's recorder, test by test, even if
        # sitecustomize.py put the subprocesses' recorder in place at start-up.
        from mutmut.mutation import trampoline
        from mutmut.stats import record_trampoline_hit

        vars(trampoline)["record_trampoline_hit"] = record_trampoline_hit
    if hits is not None:
        with open(hits.parent / "pids", "a", encoding="utf-8") as pids:
            pids.write(f"{os.getpid()}\n")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    active = os.environ.get("MUTANT_UNDER_TEST")
    if active is None or not items:
        return
    durations: dict[str, float] = {}
    stats = Path("mutmut-stats.json")  # mutmut runs the tests in mutants/, where it keeps this
    if "__mutmut_" in active and stats.exists():
        durations = json.loads(stats.read_text(encoding="utf-8"))["duration_by_test"]
    by_file: dict[str, float] = {}
    for item in items:
        path = item.nodeid.partition("::")[0]
        by_file[path] = by_file.get(path, 0.0) + durations.get(item.nodeid, 0.0)
    # mutmut names the tests in no particular order: put them back in the suite's (files by
    # path, tests by line), which the tests were written for, with a mutant's fastest files first.
    position = {id(item): i for i, item in enumerate(items)}

    def key(item: pytest.Item) -> tuple[float, str, int, int]:
        path = item.nodeid.partition("::")[0]
        return (by_file[path], path, item.location[1] or 0, position[id(item)])

    items.sort(key=key)


def _collect_subprocess_hits(hits: Path) -> set[str]:
    names: set[str] = set()
    for path in hits.glob("*.hits"):
        try:
            text = path.read_text(encoding="utf-8")
            path.unlink()
        except FileNotFoundError:
            continue
        names.update(line for line in text.splitlines() if line)
    return names


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    hits = _hits_dir()
    if hits is not None and os.environ.get("MUTANT_UNDER_TEST") == "stats":
        from mutmut.state import state

        state()._stats.update(_collect_subprocess_hits(hits))
    yield


def _note(line: str) -> None:
    hits = _hits_dir()
    if hits is not None and "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", ""):
        with open(hits.parent / "tests.log", "a", encoding="utf-8") as log:
            log.write(f"{os.getpid()} {line}\n")


def pytest_runtest_logstart(nodeid: str) -> None:
    _note(f"start {nodeid}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        _note(f"{report.when} failed {report.nodeid}: {str(report.longrepr)[-2000:]}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _note(f"session ended with exit status {int(exitstatus)}")
