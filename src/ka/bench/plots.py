"""PNG plots of one run (needs matplotlib), one message each, readable at a documentation page's width.

- ``apply_one_thread.png`` / ``read_one_thread.png``: on one thread, each way of applying (reading)
  costs what ratio of the C floor, across pool sizes; 1 is the floor.
- ``threads.png``: ``apply_many`` and ``read_many`` on one and two threads, as a speed-up over
  the stdlib loop.
- ``thread_scaling.png`` (with ``--thread-sweep``): the speed-up over one thread against the cores.

Few series per plot, each with its own colour, marker and line style (told apart in grey too);
the pure-Python twin and io_uring rows are in the table, not the plots (the twin's 3-4x would
flatten every other line).
"""

from __future__ import annotations

import os
import statistics
from typing import Any, NamedTuple

from .methods import (
    APPLY_LOOP,
    BULK_ARRAY,
    BULK_LIST,
    BULK_THREADS,
    FLOOR,
    READ_ARRAY,
    READ_LIST,
    READ_LOOP,
    READ_THREADS,
    STDLIB_APPLY,
    STDLIB_READ,
)
from .targets import ratio_of

# About 730 px wide on the page: 6.6 in at 110 dpi, fonts sized for that; the legend goes below
# the axes, where it covers no line.
FIGSIZE = (6.6, 4.4)
DPI = 110
FONT = {"font.size": 10, "axes.titlesize": 11, "legend.fontsize": 9}


class Series(NamedTuple):
    """One line: the method's name in the results, its label, and how it is drawn."""

    method: str
    label: str
    color: str
    marker: str
    linestyle: str


# Colour-blind-safe colours (Okabe-Ito); each series also differs in marker and line style.
_STDLIB = ("#D55E00", "o", "-")
_LOOP = ("#0072B2", "s", "--")
_LIST = ("#009E73", "^", "-.")
_ARRAY = ("#000000", "D", ":")


def one_thread_series(kind: str) -> list[Series]:
    if kind == "apply":
        names = [
            (STDLIB_APPLY, "stdlib setsockopt loop"),
            (APPLY_LOOP, "ka.apply in a Python loop"),
            (BULK_LIST, "ka.apply_many(list of sockets)"),
            (BULK_ARRAY, "ka.apply_many(int array)"),
        ]
    else:
        names = [
            (STDLIB_READ, "stdlib getsockopt loop"),
            (READ_LOOP, "ka.read in a Python loop"),
            (READ_LIST, "ka.read_many(list of sockets)"),
            (READ_ARRAY, "ka.read_many(int array)"),
        ]
    return [Series(m, label, *style) for (m, label), style in zip(names, (_STDLIB, _LOOP, _LIST, _ARRAY))]


def _pool_axis(ax: Any, sizes: list[int]) -> None:
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("pool size (live loopback connections)")
    ax.grid(True, alpha=0.3)


def _limits(ax: Any, values: list[float], reference: float) -> None:
    """y limits around every plotted value and the reference line, with a margin."""
    low, high = min([*values, reference]), max([*values, reference])
    margin = (high - low) * 0.08 or 0.05
    ax.set_ylim(low - margin, high + margin)


def _finish(ax: Any, sizes: list[int], drawn: list[float], reference: str, ylabel: str, title: str) -> None:
    """The reference line at 1 (named), the axes around the data, labels, the legend below."""
    ax.axhline(1.0, color="grey", linewidth=1, label=f"{reference} (= 1)")
    _limits(ax, drawn, 1.0)
    _pool_axis(ax, sizes)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)


def _save(plt: Any, fig: Any, directory: str, name: str) -> str:
    path = os.path.join(directory, name)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _one_thread_plot(plt: Any, results: dict[str, Any], kind: str, directory: str) -> str | None:
    """Cost per socket on one thread as a ratio to the C floor: where ka stands against the floor."""
    sizes = sorted(int(n) for n in results[kind])
    drawn: list[float] = []
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for series in one_thread_series(kind):
        ys = [ratio_of(results, kind, n, series.method, FLOOR) for n in sizes]
        if any(y is None for y in ys):
            continue  # no C floor (no compiler), or a method this run did not time
        ax.plot(sizes, ys, color=series.color, marker=series.marker, linestyle=series.linestyle,
                linewidth=2, markersize=7, label=series.label)  # fmt: skip
        drawn += [y for y in ys if y is not None]
    if not drawn:
        plt.close(fig)
        return None
    calls = "setsockopt" if kind == "apply" else "getsockopt"
    title = f"{kind}, one thread: how close to a C loop of {calls}\n(lower is better; 1 = the C loop)"
    _finish(ax, sizes, drawn, "C floor", "cost per socket / C floor", title)
    return _save(plt, fig, directory, f"{kind}_one_thread.png")


def _threads_plot(plt: Any, results: dict[str, Any], directory: str) -> str | None:
    """apply_many and read_many on one and two threads, as a speed-up over the stdlib loop."""
    sizes = sorted(int(n) for n in results["apply"])
    fig, ax = plt.subplots(figsize=FIGSIZE)
    drawn: list[float] = []
    for kind, stdlib, one, two, color in (
        ("apply", STDLIB_APPLY, BULK_ARRAY, BULK_THREADS.format(2), "#0072B2"),
        ("read", STDLIB_READ, READ_ARRAY, READ_THREADS.format(2), "#D55E00"),
    ):
        for method, threads, marker, linestyle in ((one, 1, "o", "--"), (two, 2, "s", "-")):
            ratios = [ratio_of(results, kind, n, method, stdlib) for n in sizes]
            if any(r is None for r in ratios):
                continue
            ys = [1 / r for r in ratios if r is not None]
            ax.plot(sizes, ys, color=color, marker=marker, linestyle=linestyle, linewidth=2, markersize=7,
                    label=f"ka.{kind}_many, {threads} thread{'s' * (threads > 1)}")  # fmt: skip
            drawn += ys
    if not drawn:
        plt.close(fig)
        return None
    cpus = results.get("machine", {}).get("cpus", "?")
    title = f"Bulk calls on 1 and 2 threads, against the stdlib loop\n(higher is better; {cpus} cores)"
    _finish(ax, sizes, drawn, "stdlib loop", "speed-up over the stdlib loop", title)
    return _save(plt, fig, directory, "threads.png")


def _thread_scaling_plot(plt: Any, results: dict[str, Any], directory: str) -> str:
    sweep = results["thread_sweep"]
    ts = sorted(int(t) for t in sweep["samples"])
    one = statistics.median(sweep["samples"][str(ts[0])])
    fig, ax = plt.subplots(figsize=FIGSIZE)
    measured = [one / statistics.median(sweep["samples"][str(t)]) for t in ts]
    ideal = [min(t, results["machine"]["cpus"]) / ts[0] for t in ts]
    ax.plot(ts, measured, color="#0072B2", marker="o", linewidth=2, markersize=7, label="measured")
    ax.plot(ts, ideal, color="grey", linestyle="--", linewidth=1.5, label="ideal (one per core)")
    ax.set_xticks(ts)
    ax.set_xlabel("threads")
    ax.set_ylabel("speed-up over 1 thread")
    pool = f"{sweep['pool']:,}"
    ax.set_title(f"apply_many(int array) on {pool} sockets:\nspeed-up with threads, against one per core")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    return _save(plt, fig, directory, "thread_scaling.png")


def plots(results: dict[str, Any], directory: str) -> list[str]:
    """Write the plots of ``results`` (a run's results.json) into ``directory``; their paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    os.makedirs(directory, exist_ok=True)
    written: list[str | None] = []
    with plt.rc_context(FONT):
        for kind in ("apply", "read"):
            written.append(_one_thread_plot(plt, results, kind, directory))
        written.append(_threads_plot(plt, results, directory))
        if "thread_sweep" in results:
            written.append(_thread_scaling_plot(plt, results, directory))
    return [path for path in written if path]
