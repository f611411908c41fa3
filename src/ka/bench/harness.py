"""The benchmark harness: ka against plain socket calls, the C floor and threads, on live pools.

One harness serves ``python -m ka bench`` (a quick default) and ``benchmarks/run.py`` (the full
sweep with JSON and plots). Every method of a table is timed in the same run on the same pool,
interleaved round by round (in a new random order each round), and reported as the median ns per
socket with the
spread (25th-75th percentile) across rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import ka

from . import floor as floor_mod
from .methods import Method, apply_methods, read_methods, threaded_apply
from .plots import plots
from .pool import LoopbackPool, somaxconn
from .report import report
from .server_path import server_path, server_path_once
from .strace import server_syscalls
from .timing import bulk_memory, threshold_sweep, time_interleaved

# The parts: methods.py (what is timed), timing.py, server_path.py and strace.py (how), targets.py,
# report.py and plots.py (what is shown). This module takes the options and runs them in order.


def _load_average() -> float | None:
    """The 1-minute load average: other work on the machine takes cores from the threaded rows."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# -- the run ------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes",
        default="1000,4000,16000",
        help="comma-separated pool sizes (default 1000,4000,16000; at most about 19000)",
    )
    parser.add_argument("--rounds", type=int, default=21, help="timed rounds per method (default 21)")
    parser.add_argument(
        "--threads", type=int, default=0, help="threads for the threaded rows (default: the number of CPUs)"
    )
    parser.add_argument(
        "--thread-sweep",
        default="",
        help="thread counts to sweep on the largest pool, e.g. 1,2,4 (default: none)",
    )
    parser.add_argument(
        "--server-n",
        type=int,
        default=2000,
        help="connections for the server-path rows (default 2000; 0 skips them)",
    )
    parser.add_argument(
        "--syscalls", action="store_true", help="count server-path system calls with strace -c -f"
    )
    parser.add_argument("--json", metavar="FILE", help="write the raw results as JSON to FILE")
    parser.add_argument("--plots", metavar="DIR", help="write PNG plots to DIR (needs matplotlib)")
    parser.add_argument(
        "--threshold-sizes",
        default="64,128,256,512,1024",
        help="small pools on which 1 and 2 threads are compared, to place the default-threads rule "
        "(default 64,128,256,512,1024; empty skips)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")


class Progress:
    """One line per phase, on stderr. On a terminal it is redrawn in place with the round count;
    when stdout or stderr is a pipe or a file (CI logs, ``| tee``) each phase is printed once and
    rounds are not reported."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.live: bool = not quiet and sys.stderr.isatty() and sys.stdout.isatty()
        self.started: float = time.monotonic()

    def _line(self, text: str) -> str:
        return f"[{time.monotonic() - self.started:5.1f}s] {text}"

    def phase(self, text: str) -> None:
        if self.live:
            print(f"\r\033[K{self._line(text)}", end="", file=sys.stderr, flush=True)
        elif not self.quiet:
            print(self._line(text), file=sys.stderr, flush=True)

    def tick(self, text: str) -> None:
        """A step within a phase: shown only where the line is redrawn in place."""
        if self.live:
            print(f"\r\033[K{self._line(text)}", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.live:
            print("\r\033[K", end="", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = sorted({int(x) for x in args.sizes.split(",") if x.strip()})
    threads = args.threads or max(2, _cpus())
    progress = Progress(args.quiet)
    floor, floor_note = floor_mod.load()
    notes = [f"C floor: {floor_note}"] if floor is not None else [f"C floor skipped: {floor_note}"]
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "implementation": ka.IMPLEMENTATION,
            "platform": platform.platform(),
            "cpus": _cpus(),
            "load_average_at_start": _load_average(),
            "bulk_backend": ka.capabilities().bulk_backend,
            "bulk_backend_note": ka.capabilities().bulk_backend_note,
        },
        "rounds": args.rounds,
        "threads": threads,
        "apply": {},
        "read": {},
        "notes": notes,
    }
    for n in sizes:
        with LoopbackPool(n) as pool:
            tables = {
                "apply": apply_methods(pool, floor, threads, notes),
                "read": read_methods(pool, floor, threads),
            }
            for kind, methods in tables.items():
                label = f"{kind}: pool of {n}, {len(methods)} methods, {args.rounds} rounds"
                progress.phase(label)

                def tick(r: int, label: str = label) -> None:
                    progress.tick(f"{label}: round {r}")

                results[kind][str(n)] = time_interleaved(methods, n, args.rounds, tick)
            if n == sizes[-1]:
                progress.phase(f"memory: pool of {n}")
                results["memory"] = {"pool": n, **bulk_memory(pool)}
                sweep = [int(x) for x in args.thread_sweep.split(",") if x.strip()]
                if sweep:
                    fds = pool.fds()
                    tm: dict[str, Method] = {str(t): threaded_apply(fds, t) for t in sweep}
                    progress.phase(f"thread sweep on {n}")
                    results["thread_sweep"] = {"pool": n, "samples": time_interleaved(tm, n, args.rounds)}
    small = sorted({int(x) for x in args.threshold_sizes.split(",") if x.strip()})
    if small and ka.IMPLEMENTATION == "c":
        progress.phase(f"threads 1 vs 2 on small pools ({', '.join(map(str, small))})")
        results["threshold"] = threshold_sweep(small, args.rounds)
    if args.server_n:
        n = min(args.server_n, somaxconn())
        progress.phase(f"server path: {n} accepted connections per round")
        results["server"] = {"n": n, "samples": server_path(n, max(3, args.rounds // 2))}
        if args.syscalls:
            progress.phase("server path: counting system calls with strace")
            results["server"]["syscalls"] = server_syscalls(min(n, 1000))
    progress.done()
    results["machine"]["load_average_at_end"] = _load_average()
    results["notes"] = list(dict.fromkeys(notes))
    return results


def run_cli(args: argparse.Namespace) -> int:
    results = run(args)
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"raw results: {args.json}")
    if args.plots:
        written = plots(results, args.plots)
        if written:
            print("plots: " + ", ".join(written))
        else:
            print("plots skipped: matplotlib is not installed (pip install 'ka[bench]')")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ka-bench", description=__doc__)
    add_arguments(parser)
    parser.add_argument("--server-path-child", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.server_path_child:
        mode, n = args.server_path_child
        server_path_once(mode, int(n))
        return 0
    return run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
