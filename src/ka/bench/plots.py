"""PNG plots of one run (needs matplotlib): ratios to the C floor and the stdlib loop, thread scaling."""

from __future__ import annotations

import os
import statistics
from typing import Any

from .methods import FLOOR, STDLIB_APPLY, STDLIB_READ, TWIN_APPLY, TWIN_READ
from .targets import median_of, ratio_of


def _ratio_plot(plt: Any, results: dict[str, Any], kind: str, directory: str) -> str | None:
    """Each method's cost as a ratio to the C floor and to the stdlib loop, across pool sizes.

    The pure-Python twin (10x and more) gets its own panel, so it does not flatten the others.
    """
    sizes = sorted(int(n) for n in results[kind])
    stdlib = STDLIB_APPLY if kind == "apply" else STDLIB_READ
    twin = TWIN_APPLY if kind == "apply" else TWIN_READ
    names = [name for name in results[kind][str(sizes[0])] if name not in (FLOOR, twin)]
    has_floor = median_of(results, kind, sizes[0], FLOOR) is not None
    fig, axes = plt.subplots(1, 3, figsize=(17, 6.5), gridspec_kw={"width_ratios": [3, 3, 1.4]})
    panels = [(axes[0], FLOOR, "cost / C floor (lower is better; 1 = the floor)"), (axes[1], stdlib, "")]
    for ax, base, ylabel in panels:
        if base == FLOOR and not has_floor:
            ax.set_title("no C floor in this run (no compiler)")
            continue
        shown = [*names, FLOOR] if base == stdlib and has_floor else names
        for name in shown:
            ys = [ratio_of(results, kind, n, name, base) for n in sizes]
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
    if median_of(results, kind, sizes[0], twin) is not None:
        for base, label in ((FLOOR, "/ C floor"), (stdlib, "/ stdlib loop")):
            ys = [ratio_of(results, kind, n, twin, base) for n in sizes]
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
