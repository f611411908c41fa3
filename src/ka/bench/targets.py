"""The targets of the benchmark issues, each a ratio of two medians from one run."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any, Optional

from .methods import (
    APPLY_LOOP,
    BULK_ARRAY,
    BULK_LIST,
    BULK_THREADS,
    BULK_URING,
    BULK_URING_THREADS,
    FLOOR,
    READ_ARRAY,
    READ_LIST,
    READ_LOOP,
    READ_THREADS,
    STDLIB_APPLY,
    STDLIB_READ,
)


def median_of(results: dict[str, Any], kind: str, n: int, name: str) -> float | None:
    samples = results[kind].get(str(n), {}).get(name)
    return statistics.median(samples) if samples else None


def ratio_of(
    results: dict[str, Any], kind: str, n: int, name: str, base: str, n_base: int | None = None
) -> float | None:
    """The median of ``name`` on pool ``n`` over that of ``base`` (on pool ``n_base``, default ``n``)."""
    x, y = median_of(results, kind, n, name), median_of(results, kind, n if n_base is None else n_base, base)
    return None if x is None or y is None else x / y


Target = tuple[str, Optional[float], str, Optional[bool]]
Goal = tuple[str, Callable[[float], bool]]  # as shown, and the test of a measured figure


def _at_most(limit: float) -> Goal:
    return f"<= {limit:.2f}", lambda r: r <= limit


def _at_least(limit: float) -> Goal:
    return f">= {limit:.2f}", lambda r: r >= limit


def _flat(r: float) -> bool:
    return 0.85 <= r <= 1.15


_NONE_KEPT: Goal = ("< 0.01 (none)", lambda r: r < 0.01)


def targets(results: dict[str, Any]) -> list[Target]:
    """(target, measured, goal, met) for every target of the benchmark issues, at every pool size.

    Every figure is a ratio of two medians from this run. The flatness rows come in pairs: ka's
    own cost, and the C floor's over the same sizes, since a kernel whose per-socket cost grows
    with the pool moves both alike.
    """
    sizes = sorted(int(n) for n in results["apply"])
    big, small = sizes[-1], sizes[0]
    rows: list[Target] = []

    def add(name: str, value: float | None, goal: Goal) -> None:
        rows.append((name, value, goal[0], None if value is None else goal[1](value)))

    for kind, stdlib, array_name, list_name, thr, loop, loop_goal in (
        ("apply", STDLIB_APPLY, BULK_ARRAY, BULK_LIST, BULK_THREADS, APPLY_LOOP, 1.10),
        ("read", STDLIB_READ, READ_ARRAY, READ_LIST, READ_THREADS, READ_LOOP, 1.15),
    ):
        fn = "apply_many" if kind == "apply" else "read_many"
        one = "ka.apply" if kind == "apply" else "ka.read"
        for n in sizes:
            per_size: list[tuple[str, str, str, Goal]] = [
                (f"{one} in a loop / C floor", loop, FLOOR, _at_most(loop_goal)),
                (f"{one} in a loop speed-up over stdlib", stdlib, loop, _at_least(1.30)),
                (
                    "  the C floor's own speed-up over stdlib",
                    stdlib,
                    FLOOR,
                    ("(the most any method gets)", lambda r: r >= 1.30),
                ),
                (f"{fn}(int array) / C floor, 1 thread", array_name, FLOOR, _at_most(1.05)),
                (f"{fn}(int array) speed-up over stdlib", stdlib, array_name, _at_least(1.35)),
                (f"{fn}(list) speed-up over stdlib", stdlib, list_name, _at_least(1.30)),
                (
                    f"{fn} threads=2 speed-up over 1 thread",
                    array_name,
                    thr.format(2),
                    _at_least(1.80 if n >= 4000 else 1.75),
                ),
            ]
            if kind == "apply":
                per_size += [
                    ("apply_many io_uring speed-up over C floor", FLOOR, BULK_URING, _at_least(1.20)),
                    (
                        "apply_many io_uring threads=2 over io_uring 1 thread",
                        BULK_URING,
                        BULK_URING_THREADS.format(2),
                        ("> 1.00 (faster still)", lambda r: r > 1.0),
                    ),
                ]
            for name, a, b, goal in per_size:
                add(f"{name}, pool {n}", ratio_of(results, kind, n, a, b), goal)
        if big != small:
            pools = f"pool {big} / pool {small}"
            add(
                f"{fn}(int array) cost per socket, {pools}",
                ratio_of(results, kind, big, array_name, array_name, small),
                ("within 0.85-1.15", _flat),
            )
            add(
                f"  the C floor's own, {pools}",
                ratio_of(results, kind, big, FLOOR, FLOOR, small),
                ("(kernel, for reference)", _flat),
            )
    memory = results.get("memory", {})
    for name, key, goal in (
        (
            "bulk call bytes per socket (int array)",
            "int array: peak bytes per socket",
            ("<= 10 (about 9)", lambda r: r <= 10),
        ),
        (
            "Python objects kept per socket (int array)",
            "int array: Python objects kept per socket",
            _NONE_KEPT,
        ),
        (
            "Python objects kept per socket (list)",
            "list of sockets: Python objects kept per socket",
            _NONE_KEPT,
        ),
    ):
        add(f"{name}, pool {memory.get('pool', '-')}", memory.get(key), goal)
    return rows
