"""Timing: every method of a table in the same run on the same pool, interleaved round by round.

Also the threads-1-against-2 sweep on small pools and the memory a bulk call adds.
"""

from __future__ import annotations

import array
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from functools import partial

import ka

from .methods import Method, Values
from .pool import LoopbackPool

_CYCLE = 2 * 97 * 31  # values repeat after this many calls


def round_values(calls: int = _CYCLE) -> list[Values]:
    # Every call sets values different from the call before it on the same sockets: the kernel
    # does less work re-setting an unchanged idle (the keepalive timer keeps its expiry), and
    # whichever method ran first in a round would otherwise be the only one paying full price.
    return [(60 + i % 97, 10 + i % 31, 5 + i % 2) for i in range(min(calls, _CYCLE))]


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
    values = round_values()
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
