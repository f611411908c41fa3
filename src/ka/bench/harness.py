"""The benchmark harness: ka against plain socket calls, the C floor and threads, on live pools.

One harness serves ``python -m ka bench`` (a quick default) and ``benchmarks/run.py`` (the full
sweep with JSON and plots). Every method of a table is timed in the same run on the same pool,
interleaved round by round (in a new random order each round), and reported as the median ns per
socket with the
spread (25th-75th percentile) across rounds.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from typing import Any, Optional

import ka
from ka import _ka_py, _options

from . import floor as floor_mod
from .pool import LoopbackPool, somaxconn

_TCP = socket.IPPROTO_TCP
# This OS's option numbers (ka's table): a hard-coded 18 is TCP_USER_TIMEOUT on Linux only.
_NUMBERS = {o: n for o, n in _options.HERE.numbers.items() if n is not None}
_IDLE = _NUMBERS.get(ka.Option.IDLE)
_INTVL = _NUMBERS.get(ka.Option.INTERVAL)
_CNT = _NUMBERS.get(ka.Option.COUNT)
# The knobs this OS has, in ka.read_many's order; the stdlib loops set and read exactly these.
_READ_NUMBERS = [n for o, n in sorted(_NUMBERS.items())]
_SOL, _SO_KA = socket.SOL_SOCKET, socket.SO_KEEPALIVE

Values = tuple[int, int, int]
Method = Callable[[Values], object]

STDLIB_APPLY = "stdlib setsockopt loop"
STDLIB_READ = "stdlib getsockopt loop"
FLOOR = "C floor (plain C loop)"
BULK_ARRAY = "ka.apply_many(int array)"
BULK_LIST = "ka.apply_many(list of sockets)"
BULK_THREADS = "ka.apply_many(int array, threads={})"
BULK_URING = "ka.apply_many(int array, io_uring)"
BULK_URING_THREADS = "ka.apply_many(int array, io_uring, threads={})"
BULK_DEFAULT = "ka.apply_many(int array), default threads"
APPLY_LOOP = "ka.apply in a Python loop"
TWIN_APPLY = "pure-Python twin apply_many(int array)"
READ_ARRAY = "ka.read_many(int array)"
READ_LIST = "ka.read_many(list of sockets)"
READ_THREADS = "ka.read_many(int array, threads={})"
READ_DEFAULT = "ka.read_many(int array), default threads"
READ_LOOP = "ka.read in a Python loop"
TWIN_READ = "pure-Python twin read_many(int array)"


# -- the methods --------------------------------------------------------------------------------
def stdlib_apply(sockets: list[socket.socket], values: Values) -> None:
    """What code without ka does: one setsockopt per option (four on Linux, macOS, Windows)."""
    calls = [
        (_TCP, number, value) for number, value in zip((_IDLE, _INTVL, _CNT), values) if number is not None
    ]
    for s in sockets:
        s.setsockopt(_SOL, _SO_KA, 1)
        for level, number, value in calls:
            s.setsockopt(level, number, value)


def stdlib_read(sockets: list[socket.socket]) -> list[tuple[int, ...]]:
    """The same reads as ka.read_many, one getsockopt each (the options this OS has)."""
    return [
        (s.getsockopt(_SOL, _SO_KA), *(s.getsockopt(_TCP, number) for number in _READ_NUMBERS))
        for s in sockets
    ]


def _keepalive_socket() -> Any:
    try:
        import keepalive  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None
    return keepalive if hasattr(keepalive, "set") else None


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


def _thread_counts(threads: int) -> list[int]:
    """The threaded rows: 2 threads (the issue's targets) and the machine's count if it differs."""
    return sorted({2, threads})


def uring_usable() -> bool:
    return ka.capabilities().implementation == "c" and not ka.core.uring_status()[0]


def apply_methods(
    pool: LoopbackPool, floor: floor_mod.Floor | None, threads: int, notes: list[str]
) -> dict[str, Method]:
    socks = pool.sockets
    fds = pool.fds()
    policy = ka.KeepAlive  # one policy per call, built outside the per-socket work
    methods: dict[str, Method] = {
        STDLIB_APPLY: lambda v: stdlib_apply(socks, v),
    }
    keepalive = _keepalive_socket()
    if keepalive is not None:
        methods["keepalive-socket (PyPI)"] = lambda v: [keepalive.set(s, *v) for s in socks]
    else:
        notes.append("keepalive-socket is not installed: skipped (pip install keepalive-socket)")

    def apply_loop(v: Values) -> None:
        p, apply = policy(*v), ka.apply
        for s in socks:
            apply(s, p)

    def bulk(t: int, backend: str) -> Method:
        return lambda v: ka.apply_many(fds, policy(*v), threads=t, backend=backend)

    methods[APPLY_LOOP] = apply_loop
    methods[BULK_LIST] = lambda v: ka.apply_many(socks, policy(*v), threads=1, backend="syscalls")
    methods[BULK_ARRAY] = bulk(1, "syscalls")
    for t in _thread_counts(threads):
        methods[BULK_THREADS.format(t)] = bulk(t, "syscalls")
    if uring_usable():
        methods[BULK_URING] = bulk(1, "io_uring")
        for t in _thread_counts(threads):
            methods[BULK_URING_THREADS.format(t)] = bulk(t, "io_uring")
    else:
        notes.append(f"io_uring rows skipped: {ka.capabilities().bulk_backend_note}")
    methods[BULK_DEFAULT] = lambda v: ka.apply_many(fds, policy(*v))
    if ka.IMPLEMENTATION == "c":
        methods[TWIN_APPLY] = lambda v: _ka_py.apply_many(fds, policy(*v), 1, "syscalls")
    if floor is not None:
        methods[FLOOR] = lambda v: floor.apply(fds, *v)
    return methods


def read_methods(pool: LoopbackPool, floor: floor_mod.Floor | None, threads: int) -> dict[str, Method]:
    socks = pool.sockets
    fds = pool.fds()
    out = array.array("i", bytes(4 * 5 * len(fds)))

    def read_loop(v: Values) -> None:
        read = ka.read
        for s in socks:
            read(s)

    def bulk(t: int) -> Method:
        return lambda v: ka.read_many(fds, threads=t)

    methods: dict[str, Method] = {
        STDLIB_READ: lambda v: stdlib_read(socks),
        READ_LOOP: read_loop,
        READ_LIST: lambda v: ka.read_many(socks, threads=1),
        READ_ARRAY: bulk(1),
    }
    for t in _thread_counts(threads):
        methods[READ_THREADS.format(t)] = bulk(t)
    methods[READ_DEFAULT] = lambda v: ka.read_many(fds)
    if ka.IMPLEMENTATION == "c":
        methods[TWIN_READ] = lambda v: _ka_py.read_many(fds, 1)
    if floor is not None:
        methods[FLOOR] = lambda v: floor.read(fds, out)
    return methods


_CYCLE = 2 * 97 * 31  # values repeat after this many calls


def _threaded_apply(fds: array.array[int], threads: int) -> Method:
    return lambda v: ka.apply_many(fds, ka.KeepAlive(*v), threads=threads)


def _round_values(calls: int = _CYCLE) -> list[Values]:
    # Every call sets values different from the call before it on the same sockets: the kernel
    # does less work re-setting an unchanged idle (the keepalive timer keeps its expiry), and
    # whichever method ran first in a round would otherwise be the only one paying full price.
    return [(60 + i % 97, 10 + i % 31, 5 + i % 2) for i in range(min(calls, _CYCLE))]


# -- timing -------------------------------------------------------------------------------------
def _percentile(sorted_values: list[float], q: float) -> float:
    k = (len(sorted_values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summarize(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median": statistics.median(ordered),
        "p25": _percentile(ordered, 0.25),
        "p75": _percentile(ordered, 0.75),
        "min": ordered[0],
        "max": ordered[-1],
    }


def time_interleaved(
    methods: dict[str, Method], n: int, rounds: int, progress: Callable[[int], None] | None = None
) -> dict[str, list[float]]:
    """ns per socket of each method, ``rounds`` times, interleaved in a random order per round."""
    names = list(methods)
    samples: dict[str, list[float]] = {name: [] for name in names}
    values = _round_values()
    call = 0
    for name in names:  # warm-up: first calls fault in pages and caches
        methods[name](values[call % _CYCLE])
        call += 1
    shuffler = random.Random(rounds * 7919 + n)
    for r in range(rounds):
        # A fresh random order each round: no method always follows the same neighbour (a threaded
        # run leaves socket cache lines on the other core; a slow Python loop lets caches cool).
        order = names[:]
        shuffler.shuffle(order)
        for name in order:
            v = values[call % _CYCLE]
            call += 1
            t0 = time.perf_counter_ns()
            methods[name](v)
            samples[name].append((time.perf_counter_ns() - t0) / n)
        if progress is not None:
            progress(r + 1)
    return samples


def threshold_sweep(sizes: list[int], rounds: int) -> dict[str, dict[str, list[float]]]:
    """apply_many and read_many on 1 and 2 threads over small pools: where 2 threads start to pay."""
    out: dict[str, dict[str, list[float]]] = {}
    for n in sizes:
        with LoopbackPool(n) as pool:
            fds = pool.fds()
            methods: dict[str, Method] = {}
            for t in (1, 2):
                methods[f"apply {t}"] = partial(_bulk_apply, fds, t)
                methods[f"read {t}"] = partial(_bulk_read, fds, t)
            out[str(n)] = time_interleaved(methods, n, rounds)
    return out


def _bulk_apply(fds: array.array[int], threads: int, v: Values) -> object:
    return ka.apply_many(fds, ka.KeepAlive(*v), threads=threads, backend="syscalls")


def _bulk_read(fds: array.array[int], threads: int, v: Values) -> object:
    return ka.read_many(fds, threads=threads)


# -- memory -------------------------------------------------------------------------------------
def bulk_memory(pool: LoopbackPool) -> dict[str, float]:
    """Bytes a bulk call adds per socket (peak), and Python objects it leaves per socket."""
    n = len(pool)
    fds = pool.fds()
    socks = pool.sockets
    policy = ka.KeepAlive(61, 11, 6)
    out: dict[str, float] = {}
    for label, targets in (("int array", fds), ("list of sockets", socks)):
        ka.apply_many(targets, policy, threads=1)
        blocks_before = sys.getallocatedblocks()
        tracemalloc.start()
        result = ka.apply_many(targets, policy, threads=1)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        blocks_after = sys.getallocatedblocks()
        assert result.ok
        out[f"{label}: peak bytes per socket"] = peak / n
        out[f"{label}: Python objects kept per socket"] = (blocks_after - blocks_before) / n
        del result
    return out


# -- the server path ----------------------------------------------------------------------------
SERVER_MODES = {
    "accept only (no keepalive)": "none",
    "stdlib: 4 setsockopt per accept": "stdlib",
    "ka.apply per accept": "ka",
    "inherited from the listener (set once)": "inherit",
}


def _stdlib_apply_one(sock: socket.socket, values: Values) -> None:
    stdlib_apply([sock], values)


def _ka_apply_one(sock: socket.socket, policy: ka.KeepAlive) -> None:
    ka.apply(sock, policy)


def server_path_once(mode: str, n: int) -> float:
    """ns per accepted connection, accept loop included, for one way of giving the policy."""
    policy = ka.KeepAlive(61, 11, 6)
    values = (61, 11, 6)
    prepare: Callable[[socket.socket], object] | None = None
    on_accept: Callable[[socket.socket], object] | None = None
    if mode == "stdlib":
        on_accept = partial(_stdlib_apply_one, values=values)
    elif mode == "ka":
        on_accept = partial(_ka_apply_one, policy=policy)
    elif mode == "inherit":
        prepare = partial(_ka_apply_one, policy=policy)
    with LoopbackPool(n, prepare_listener=prepare, on_accept=on_accept, connect_first=True) as pool:
        if mode != "none":
            assert ka.read(pool.sockets[-1]).idle == 61, f"{mode}: policy missing on an accepted socket"
        return pool.accept_ns / n


def server_path(n: int, rounds: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {label: [] for label in SERVER_MODES}
    labels = list(SERVER_MODES)
    for r in range(rounds):
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            samples[label].append(server_path_once(SERVER_MODES[label], n))
    return samples


def server_syscalls(n: int) -> dict[str, dict[str, float]] | str:
    """setsockopt and accept calls per accepted connection, counted by ``strace -c -f``."""
    strace = shutil.which("strace")
    if strace is None:
        return "strace is not installed: system calls not counted"
    counts: dict[str, dict[str, float]] = {}
    for label, mode in SERVER_MODES.items():
        with tempfile.NamedTemporaryFile("r", suffix=".strace") as report:
            cmd = [
                strace,
                "-f",
                "-c",
                "-o",
                report.name,
                "-e",
                "trace=setsockopt,accept,accept4",
                sys.executable,
                "-m",
                "ka.bench.harness",
                "--server-path-child",
                mode,
                str(n),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                return f"strace failed ({proc.stderr.strip()[:200]})"
            calls = _parse_strace_summary(report.read())
        counts[label] = {name: calls.get(name, 0) / n for name in ("setsockopt", "accept4")}
        counts[label]["accept4"] += calls.get("accept", 0) / n
    return counts


def _parse_strace_summary(text: str) -> dict[str, int]:
    calls: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[-1].isidentifier() and fields[3].isdigit():
            calls[fields[-1]] = int(fields[3])
    return calls


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
        self.live = not quiet and sys.stderr.isatty() and sys.stdout.isatty()
        self.started = time.monotonic()

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
                    tm: dict[str, Method] = {str(t): _threaded_apply(fds, t) for t in sweep}
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


# -- reporting ----------------------------------------------------------------------------------
def _median(results: dict[str, Any], kind: str, n: int, name: str) -> float | None:
    samples = results[kind].get(str(n), {}).get(name)
    return statistics.median(samples) if samples else None


def table(results: dict[str, Any], kind: str) -> str:
    base_name = STDLIB_APPLY if kind == "apply" else STDLIB_READ
    lines = []
    for n_text, methods in results[kind].items():
        n = int(n_text)
        base = _median(results, kind, n, base_name)
        floor = _median(results, kind, n, FLOOR)
        lines.append(f"\n{kind} on a pool of {n} live connections ({results['rounds']} rounds, interleaved)")
        lines.append(
            f"  {'method':42s} {'ns/socket':>10s} {'p25-p75':>15s} {'vs stdlib':>10s} {'vs C floor':>11s}"
        )
        for name, samples in sorted(methods.items(), key=lambda kv: -statistics.median(kv[1])):
            s = summarize(samples)
            speed = f"{base / s['median']:.2f}x" if base else "-"
            vs_floor = f"{s['median'] / floor:.3f}x" if floor else "-"
            spread = f"{s['p25']:.0f}-{s['p75']:.0f}"
            lines.append(f"  {name:42s} {s['median']:10.0f} {spread:>15s} {speed:>10s} {vs_floor:>11s}")
    return "\n".join(lines)


def server_table(results: dict[str, Any]) -> str:
    server = results.get("server")
    if not server:
        return ""
    lines = [f"\nserver path: {server['n']} connections accepted per round (accept loop, ns per connection)"]
    samples = server["samples"]
    base = statistics.median(samples["stdlib: 4 setsockopt per accept"])
    syscalls = server.get("syscalls")
    header = f"  {'how the policy is given':42s} {'ns/conn':>10s} {'vs stdlib':>10s}"
    if isinstance(syscalls, dict):
        header += f" {'setsockopt/conn':>16s} {'accept/conn':>12s}"
    lines.append(header)
    for label, values in samples.items():
        med = statistics.median(values)
        line = f"  {label:42s} {med:10.0f} {base / med:9.2f}x"
        if isinstance(syscalls, dict):
            c = syscalls[label]
            line += f" {c['setsockopt']:16.3f} {c['accept4']:12.3f}"
        lines.append(line)
    if isinstance(syscalls, str):
        lines.append(f"  ({syscalls})")
    return "\n".join(lines)


Target = tuple[str, Optional[float], str, Optional[bool]]


def targets(results: dict[str, Any]) -> list[Target]:
    """(target, measured, goal, met) for every target of the benchmark issues, at every pool size.

    Every figure is a ratio of two medians from this run. The flatness rows come in pairs: ka's
    own cost, and the C floor's over the same sizes, since a kernel whose per-socket cost grows
    with the pool moves both alike.
    """
    sizes = sorted(int(n) for n in results["apply"])
    big, small = sizes[-1], sizes[0]
    rows: list[Target] = []

    def ratio(kind: str, na: int, a: str, nb: int, b: str) -> float | None:
        x, y = _median(results, kind, na, a), _median(results, kind, nb, b)
        return None if x is None or y is None else x / y

    def row(name: str, value: float | None, goal: str, ok: Callable[[float], bool]) -> None:
        rows.append((name, value, goal, None if value is None else ok(value)))

    def at_most(limit: float) -> tuple[str, Callable[[float], bool]]:
        return f"<= {limit:.2f}", lambda r: r <= limit

    def at_least(limit: float) -> tuple[str, Callable[[float], bool]]:
        return f">= {limit:.2f}", lambda r: r >= limit

    for kind, stdlib, array_name, list_name, thr, loop, loop_goal in (
        ("apply", STDLIB_APPLY, BULK_ARRAY, BULK_LIST, BULK_THREADS, APPLY_LOOP, 1.10),
        ("read", STDLIB_READ, READ_ARRAY, READ_LIST, READ_THREADS, READ_LOOP, 1.15),
    ):
        fn = "apply_many" if kind == "apply" else "read_many"
        one = "ka.apply" if kind == "apply" else "ka.read"
        for n in sizes:
            row(f"{one} in a loop / C floor, pool {n}", ratio(kind, n, loop, n, FLOOR), *at_most(loop_goal))
            row(
                f"{one} in a loop speed-up over stdlib, pool {n}",
                ratio(kind, n, stdlib, n, loop),
                *at_least(1.30),
            )
            row(
                f"  the C floor's own speed-up over stdlib, pool {n}",
                ratio(kind, n, stdlib, n, FLOOR),
                "(the most any method gets)",
                lambda r: r >= 1.30,
            )
            row(
                f"{fn}(int array) / C floor, 1 thread, pool {n}",
                ratio(kind, n, array_name, n, FLOOR),
                *at_most(1.05),
            )
            row(
                f"{fn}(int array) speed-up over stdlib, pool {n}",
                ratio(kind, n, stdlib, n, array_name),
                *at_least(1.35),
            )
            row(
                f"{fn}(list) speed-up over stdlib, pool {n}",
                ratio(kind, n, stdlib, n, list_name),
                *at_least(1.30),
            )
            row(
                f"{fn} threads=2 speed-up over 1 thread, pool {n}",
                ratio(kind, n, array_name, n, thr.format(2)),
                *at_least(1.80 if n >= 4000 else 1.75),
            )
            if kind == "apply":
                row(
                    f"apply_many io_uring speed-up over C floor, pool {n}",
                    ratio(kind, n, FLOOR, n, BULK_URING),
                    *at_least(1.20),
                )
                row(
                    f"apply_many io_uring threads=2 over io_uring 1 thread, pool {n}",
                    ratio(kind, n, BULK_URING, n, BULK_URING_THREADS.format(2)),
                    "> 1.00 (faster still)",
                    lambda r: r > 1.0,
                )
        if big != small:
            row(
                f"{fn}(int array) cost per socket, pool {big} / pool {small}",
                ratio(kind, big, array_name, small, array_name),
                "within 0.85-1.15",
                lambda r: 0.85 <= r <= 1.15,
            )
            row(
                f"  the C floor's own, pool {big} / pool {small}",
                ratio(kind, big, FLOOR, small, FLOOR),
                "(kernel, for reference)",
                lambda r: 0.85 <= r <= 1.15,
            )
    memory = results.get("memory", {})
    row(
        f"bulk call bytes per socket (int array), pool {memory.get('pool', '-')}",
        memory.get("int array: peak bytes per socket"),
        "<= 10 (about 9)",
        lambda r: r <= 10,
    )
    row(
        f"Python objects kept per socket (int array), pool {memory.get('pool', '-')}",
        memory.get("int array: Python objects kept per socket"),
        "< 0.01 (none)",
        lambda r: r < 0.01,
    )
    row(
        f"Python objects kept per socket (list), pool {memory.get('pool', '-')}",
        memory.get("list of sockets: Python objects kept per socket"),
        "< 0.01 (none)",
        lambda r: r < 0.01,
    )
    return rows


def threshold_table(results: dict[str, Any]) -> str:
    sweep = results.get("threshold")
    if not sweep:
        return ""
    lines = [
        "\nwhere 2 threads start to pay (1-thread time / 2-thread time; default rule: 2 threads from "
        f"{2 * ka.SOCKETS_PER_THREAD} sockets)",
        f"  {'pool':>6s} {'apply_many':>11s} {'read_many':>10s}",
    ]
    for n, samples in sweep.items():
        a = statistics.median(samples["apply 1"]) / statistics.median(samples["apply 2"])
        r = statistics.median(samples["read 1"]) / statistics.median(samples["read 2"])
        lines.append(f"  {n:>6s} {a:10.2f}x {r:9.2f}x")
    return "\n".join(lines)


def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    parts = [
        f"ka bench: Python {m['python']}, ka core: {m['implementation']}, {m['cpus']} CPUs, {m['platform']}",
        f"bulk backend (capabilities): {m.get('bulk_backend', '?')}: {m.get('bulk_backend_note', '')}",
        f"load average (1 min) at start {m.get('load_average_at_start')}, at end "
        f"{m.get('load_average_at_end')}: other work takes cores from the threaded rows",
    ]
    parts.append(table(results, "apply"))
    parts.append(table(results, "read"))
    if "thread_sweep" in results:
        sweep = results["thread_sweep"]
        one = statistics.median(sweep["samples"][min(sweep["samples"], key=int)])
        parts.append(f"\nthread scaling, apply_many(int array) on a pool of {sweep['pool']}")
        for t, samples in sweep["samples"].items():
            med = statistics.median(samples)
            parts.append(f"  threads={t:>3s} {med:10.0f} ns/socket  {one / med:5.2f}x")
    parts.append(threshold_table(results))
    parts.append(server_table(results))
    if "memory" in results:
        mem = results["memory"]
        parts.append(f"\nmemory a bulk call adds, pool of {mem['pool']}")
        for key, value in mem.items():
            if key != "pool":
                parts.append(f"  {key:48s} {value:8.3f}")
    parts.append("\ntargets (measured in this run; ratios of medians)")
    for name, value, goal, met in targets(results):
        shown = "n/a" if value is None else f"{value:.3f}"
        if goal.startswith("("):
            verdict = "reference"
        else:
            verdict = "skipped" if met is None else ("met" if met else "MISSED")
        parts.append(f"  {name:66s} {shown:>7s}  goal {goal:24s} {verdict}")
    for note in results["notes"]:
        parts.append(f"note: {note}")
    return "\n".join(p for p in parts if p)


def _ratio_plot(plt: Any, results: dict[str, Any], kind: str, directory: str) -> str | None:
    """Each method's cost as a ratio to the C floor and to the stdlib loop, across pool sizes.

    The pure-Python twin (10x and more) gets its own panel, so it does not flatten the others.
    """
    sizes = sorted(int(n) for n in results[kind])
    stdlib = STDLIB_APPLY if kind == "apply" else STDLIB_READ
    twin = TWIN_APPLY if kind == "apply" else TWIN_READ
    names = [name for name in results[kind][str(sizes[0])] if name not in (FLOOR, twin)]
    has_floor = _median(results, kind, sizes[0], FLOOR) is not None
    fig, axes = plt.subplots(1, 3, figsize=(17, 6.5), gridspec_kw={"width_ratios": [3, 3, 1.4]})
    panels = [(axes[0], FLOOR, "cost / C floor (lower is better; 1 = the floor)"), (axes[1], stdlib, "")]
    for ax, base, ylabel in panels:
        if base == FLOOR and not has_floor:
            ax.set_title("no C floor in this run (no compiler)")
            continue
        shown = [*names, FLOOR] if base == stdlib and has_floor else names
        for name in shown:
            ys = [_ratio_of(results, kind, n, name, base) for n in sizes]
            if base == stdlib:
                ys = [None if y is None else 1 / y for y in ys]
            ax.plot(sizes, ys, marker="o", label=name)
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("pool size (live loopback connections)")
        ax.grid(True, alpha=0.3)
        if base == FLOOR:
            ax.set_ylabel(ylabel)
            ax.set_title(f"{kind}: cost per socket as a ratio to the C floor")
        else:
            ax.set_ylabel("speed-up over the stdlib loop (higher is better)")
            ax.set_title(f"{kind}: speed-up over the stdlib loop")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    ax = axes[2]
    if _median(results, kind, sizes[0], twin) is not None:
        for base, label in ((FLOOR, "/ C floor"), (stdlib, "/ stdlib loop")):
            ys = [_ratio_of(results, kind, n, twin, base) for n in sizes]
            ax.plot(sizes, ys, marker="s", label=f"twin {label}")
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    ax.set_title("pure-Python twin (own scale)")
    ax.set_xlabel("pool size")
    ax.set_ylabel("cost ratio")
    ax.grid(True, alpha=0.3)
    fig.suptitle(f"ka bench ({kind}): ratios of medians, {results['rounds']} interleaved rounds, one run")
    path = os.path.join(directory, f"{kind}_ratios.png")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _ratio_of(results: dict[str, Any], kind: str, n: int, name: str, base: str) -> float | None:
    x, y = _median(results, kind, n, name), _median(results, kind, n, base)
    return None if x is None or y is None else x / y


def plots(results: dict[str, Any], directory: str) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    os.makedirs(directory, exist_ok=True)
    written = []
    for kind in ("apply", "read"):
        path = _ratio_plot(plt, results, kind, directory)
        if path:
            written.append(path)
    if "thread_sweep" in results:
        sweep = results["thread_sweep"]
        ts = sorted(int(t) for t in sweep["samples"])
        one = statistics.median(sweep["samples"][str(ts[0])])
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(
            ts, [one / statistics.median(sweep["samples"][str(t)]) for t in ts], marker="o", label="measured"
        )
        ax.plot(
            ts,
            [min(t, results["machine"]["cpus"]) / ts[0] for t in ts],
            linestyle="--",
            label="ideal (cores)",
        )
        ax.set_xlabel("threads")
        ax.set_ylabel("speed-up over 1 thread")
        ax.set_title(f"apply_many(int array) thread scaling, pool of {sweep['pool']}")
        ax.grid(True, alpha=0.3)
        ax.legend()
        path = os.path.join(directory, "thread_scaling.png")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


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
