"""Issue 10: apply_many/read_many from several threads over a list other threads mutate, with
sys.setswitchinterval(1e-6) and a timer signal raising in the calls, both implementations.
Issue 19: io_uring calls over descriptors closed and reused under them, a daemonizer closing
what it does not know, and forks racing the calls. Bounded (a few seconds each); the run is
tests/stress_worker.py in its own interpreter, so a crash is a failed test with the signal's
number, not a dead pytest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ka._impl import env_flag
from reliability_helpers import run_python

WORKER = Path(__file__).resolve().parents[1] / "stress_worker.py"
SECONDS, CALLERS, MUTATORS = 2.0, 4, 2

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and Linux errnos")


@pytest.mark.parametrize("twin", [False, True], ids=["c", "python"])
def test_bulk_calls_over_a_list_mutated_by_other_threads(twin: bool) -> None:
    if not twin and env_flag("KA_NO_EXTENSIONS"):
        pytest.skip("KA_NO_EXTENSIONS is set: the compiled core is not under test")
    argv = ["w", str(SECONDS), str(CALLERS), str(MUTATORS)]
    code = f"import runpy, sys; sys.argv = {argv!r}; runpy.run_path({str(WORKER)!r}, run_name='__main__')"
    done = run_python(code, twin=twin, timeout=60)
    assert done.returncode == 0, (
        f"exit {done.returncode} (negative: killed by that signal)\n{done.stderr[-4000:]}"
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(figures)  # the figures, for the record (pytest -s)
    assert figures["implementation"] == ("python" if twin else "c")
    assert figures["threads"] == CALLERS + MUTATORS
    assert figures["results_checked"] > 1000
    assert figures["entries_checked"] > 1000
    assert figures["results_checked"] + figures["interrupted"] >= figures["calls"] - CALLERS
    assert figures["interrupted"] > 0  # the timer's exception did land in calls


@pytest.mark.parametrize("twin", [False, True], ids=["c", "python"])
def test_calls_over_reused_numbers_with_a_daemonizer_and_forks_touch_nothing_foreign(twin: bool) -> None:
    if not twin and env_flag("KA_NO_EXTENSIONS"):
        pytest.skip("KA_NO_EXTENSIONS is set: the compiled core is not under test")
    argv = ["w", "ownership", str(SECONDS)]
    code = f"import runpy, sys; sys.argv = {argv!r}; runpy.run_path({str(WORKER)!r}, run_name='__main__')"
    done = run_python(code, twin=twin, timeout=120)
    assert done.returncode == 0, (
        f"exit {done.returncode} (negative: killed by that signal)\n{done.stderr[-4000:]}"
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(figures)  # calls, forks, hangs, foreign fds touched (pytest -s)
    assert figures["implementation"] == ("python" if twin else "c")
    assert figures["calls"] > 20 and figures["forks"] > 20 and figures["churned"] > 100, figures
    assert figures["hangs"] == 0, figures
    assert figures["foreign_touched"] == 0, figures
    assert figures["ka_fds_seen"] == 0, figures  # ka holds no descriptor between calls
