"""The benchmark harness: every method does the work it claims, and the report holds together.

Nothing here times anything: speed is the benchmark's business, printed as measured ratios.
"""

from __future__ import annotations

import argparse
import array
import json
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

import ka
from helpers import kernel_values
from ka.bench import floor as floor_mod
from ka.bench import harness, methods, plots, server_path, strace, targets, timing
from ka.bench.pool import LoopbackPool

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux option numbers")


def test_pool_holds_established_connections() -> None:
    with LoopbackPool(300) as pool:
        assert len(pool) == 300
        peers = {s.getpeername() for s in pool.sockets}
        assert len(peers) == 300
        pool.sockets[0].sendall(b"x")  # the far end is alive: no error on send
        fds = pool.fds()
        assert list(fds) == [s.fileno() for s in pool.sockets]
    assert pool.sockets == []


def test_pool_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="n >= 0"):
        LoopbackPool(-1)
    with pytest.raises(ValueError, match="descriptors here; the limit is"):
        LoopbackPool(10**9)


def test_c_floor_sets_and_reads_the_same_options() -> None:
    floor, why = floor_mod.load()
    if floor is None:
        pytest.skip(why)
    with LoopbackPool(50) as pool:
        fds = pool.fds()
        assert floor.apply(fds, 77, 13, 4) == 0
        for s in pool.sockets:
            assert kernel_values(s)[:4] == (1, 77, 13, 4)
        out = array.array("i", bytes(4 * 5 * len(fds)))
        assert floor.read(fds, out) == 0
        assert list(out[:5]) == [1, 77, 13, 4, 0]


def test_c_floor_leaves_no_temporary_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Issue 15: every load() left a ka-floor-* directory (source and library) behind."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    floor, _ = floor_mod.load()
    if floor is not None:  # the loaded library keeps working once its file is gone
        with LoopbackPool(5) as pool:
            assert floor.apply(pool.fds(), 77, 13, 4) == 0
    monkeypatch.setenv("CC", "false")  # a compiler that fails: the directory goes too
    failed, why = floor_mod.load()
    assert failed is None and "failed" in why
    assert list(tmp_path.iterdir()) == []


def test_every_apply_method_applies() -> None:
    floor, _ = floor_mod.load()
    with LoopbackPool(40) as pool:
        applied = methods.apply_methods(pool, floor, 2, [])
        for i, (name, method) in enumerate(applied.items()):
            values = (100 + i, 20 + i, 3 + i % 2)
            method(values)
            for s in pool.sockets:
                assert kernel_values(s)[:4] == (1, *values), name


def test_consecutive_calls_change_every_value() -> None:
    values = timing.round_values()
    assert all(a[k] != b[k] for a, b in zip(values, values[1:]) for k in range(3))


def test_strace_summary_parser() -> None:
    text = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 61.41    0.001845           1      1000           accept4
 38.59    0.001159           0      4004         3 setsockopt
------ ----------- ----------- --------- --------- ----------------
100.00    0.003004           0      5004         3 total
"""
    assert strace.parse_strace_summary(text) == {"accept4": 1000, "setsockopt": 4004, "total": 5004}


def test_quick_run_reports_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    harness.add_arguments(parser)
    out = tmp_path / "r.json"
    args = parser.parse_args(
        [
            "--sizes",
            "30,60",
            "--rounds",
            "2",
            "--server-n",
            "20",
            "--thread-sweep",
            "1,2",
            "--json",
            str(out),
            "--quiet",
        ]
        + (["--syscalls"] if shutil.which("strace") else [])
    )
    assert harness.run_cli(args) == 0
    text = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert set(results["apply"]) == {"30", "60"}
    for kind in ("apply", "read"):
        for samples in results[kind].values():
            assert methods.STDLIB_APPLY in samples or methods.STDLIB_READ in samples
            assert all(len(v) == 2 and all(x > 0 for x in v) for v in samples.values())
    assert set(results["server"]["samples"]) == set(server_path.SERVER_MODES)
    if shutil.which("strace"):
        calls = results["server"]["syscalls"]
        assert calls["stdlib: 4 setsockopt per accept"]["setsockopt"] == pytest.approx(4.0)
        assert calls["ka.apply per accept"]["setsockopt"] == pytest.approx(4.0)
        assert calls["inherited from the listener (set once)"]["setsockopt"] == pytest.approx(4 / 20)
        assert calls["accept only (no keepalive)"]["accept4"] == pytest.approx(1.0)
    if ka.IMPLEMENTATION == "c":
        assert results["memory"]["int array: Python objects kept per socket"] < 1
    assert "targets (measured in this run" in text
    # per size: 7 per kind (1 a reference) and 2 io_uring rows for apply; 2 flatness rows per
    # kind; 3 memory rows
    assert text.count("goal") == len(targets.targets(results)) == 2 * (7 * 2 + 2) + 2 * 2 + 3
    for needle in (
        "ka.apply in a loop / C floor, pool 30",
        "ka.read in a loop speed-up over stdlib, pool 60",
        "apply_many threads=2 speed-up over 1 thread, pool 60",
        "apply_many io_uring speed-up over C floor, pool 30",
        "bulk call bytes per socket (int array)",
    ):
        assert needle in text
    if ka.IMPLEMENTATION == "c":  # the twin has no threads to place
        assert "where 2 threads start to pay" in text
    # what backend="auto" chose, and why (issue 19 2.4)
    caps = ka.capabilities()
    assert f"backend='auto' chose: {caps.bulk_backend} (the 'default threads' rows); " in text
    assert "io_uring rows: 256 sockets per batch" in text
    # issue 23: every row of a table lines its columns up, the long io_uring names included
    for block in text.split("\n\n"):
        lines = block.splitlines()
        if lines and lines[0].startswith("apply on a pool"):
            ends = {len(line) for line in lines[1:]}
            assert len(ends) == 1, lines
    # issue 23: a one-line summary at the end, and what MISSED means
    verdicts = targets.targets(results)
    reference = sum(1 for _, _, goal, _ in verdicts if goal.startswith("("))
    missed = sum(1 for _, _, goal, met in verdicts if met is False and not goal.startswith("("))
    skipped = sum(1 for _, _, goal, met in verdicts if met is None and not goal.startswith("("))
    met = len(verdicts) - missed - reference - skipped
    summary = [line for line in text.splitlines() if line.startswith("summary: ")]
    counts = f"{met} met, {missed} MISSED, {reference} reference"
    counts += f", {skipped} skipped" if skipped else ""
    assert summary == [f"summary: {counts} (of {len(verdicts)} targets)"]
    assert text.rstrip().splitlines()[-1 if not missed else -2].startswith(("summary: ", "MISSED means"))
    if missed:
        assert "MISSED means this run measured a ratio outside the target" in text


def test_progress_off_a_terminal_is_one_line_per_phase(capfd: pytest.CaptureFixture[str]) -> None:
    """Issue 12: on a pipe the progress used to print every round (126 lines before the table)."""
    progress = harness.Progress(quiet=False)
    assert not progress.live  # pytest's captured stderr is no terminal
    progress.phase("apply: pool of 10")
    for r in range(1, 22):
        progress.tick(f"apply: pool of 10: round {r}")
    progress.done()
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "apply: pool of 10" in err and "round" not in err


def test_plots_one_message_each_at_the_pages_width(tmp_path: Path) -> None:
    """Issue 23: three panels of ten series in ~730 px were unreadable; each plot now shows one
    message with at most four series, at the documentation page's width."""
    pytest.importorskip("matplotlib")
    import struct

    results = {
        "rounds": 3,
        "machine": {"cpus": 2},
        "apply": {
            str(n): {
                methods.STDLIB_APPLY: [1400.0 * f],
                methods.FLOOR: [1000.0 * f],
                methods.BULK_ARRAY: [1010.0 * f],
                methods.BULK_THREADS.format(2): [560.0 * f],
                methods.TWIN_APPLY: [12000.0 * f],
            }
            for n, f in ((1000, 1.0), (4000, 1.1))
        },
        "read": {str(n): {methods.STDLIB_READ: [1700.0], methods.FLOOR: [1200.0]} for n in (1000, 4000)},
    }
    written = plots.plots(results, str(tmp_path))
    names = sorted(Path(p).name for p in written)
    assert names == ["apply_one_thread.png", "read_one_thread.png", "threads.png"]
    for path in written:
        header = Path(path).read_bytes()[:24]
        width, height = struct.unpack(">II", header[16:24])  # the PNG's IHDR chunk
        assert 700 <= width <= 760 and height < width, (path, width, height)
    # the plot of one thread shows no twin (it would flatten the rest) and no threads
    shown = [series.method for series in plots.one_thread_series("apply")]
    assert methods.TWIN_APPLY not in shown and len(shown) <= 4
    assert targets.ratio_of(results, "apply", 4000, methods.BULK_ARRAY, methods.FLOOR) == pytest.approx(1.01)
