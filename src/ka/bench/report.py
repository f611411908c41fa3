"""The report: the tables of one run, as text."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from ka.bulk import SOCKETS_PER_THREAD

from .methods import FLOOR, STDLIB_APPLY, STDLIB_READ
from .targets import median_of, targets
from .timing import summarize


def threshold_table(results: dict[str, Any]) -> str:
    sweep = results.get("threshold")
    if not sweep:
        return ""
    lines = [
        "\nwhere 2 threads start to pay (1-thread time / 2-thread time; default rule: 2 threads from "
        f"{2 * SOCKETS_PER_THREAD} sockets)",
        f"  {'pool':>6s} {'apply_many':>11s} {'read_many':>10s}",
    ]
    for n, samples in sweep.items():
        a = statistics.median(samples["apply 1"]) / statistics.median(samples["apply 2"])
        r = statistics.median(samples["read 1"]) / statistics.median(samples["read 2"])
        lines.append(f"  {n:>6s} {a:10.2f}x {r:9.2f}x")
    return "\n".join(lines)


def table(results: dict[str, Any], kind: str) -> str:
    base_name = STDLIB_APPLY if kind == "apply" else STDLIB_READ
    lines = []
    for n_text, methods in results[kind].items():
        n = int(n_text)
        base = median_of(results, kind, n, base_name)
        floor = median_of(results, kind, n, FLOOR)
        width = max(42, *map(len, methods))  # the longest row name sets the column
        lines.append(f"\n{kind} on a pool of {n} live connections ({results['rounds']} rounds, interleaved)")
        columns = f"{'ns/socket':>10s} {'p25-p75':>15s} {'vs stdlib':>10s} {'vs C floor':>11s}"
        lines.append(f"  {'method':{width}s} {columns}")
        for name, samples in sorted(methods.items(), key=lambda kv: -statistics.median(kv[1])):
            s = summarize(samples)
            speed = f"{base / s['median']:.2f}x" if base else "-"
            vs_floor = f"{s['median'] / floor:.3f}x" if floor else "-"
            spread = f"{s['p25']:.0f}-{s['p75']:.0f}"
            lines.append(f"  {name:{width}s} {s['median']:10.0f} {spread:>15s} {speed:>10s} {vs_floor:>11s}")
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


def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    parts = [
        f"ka bench: Python {m['python']}, ka core: {m['implementation']}, {m['cpus']} CPUs, {m['platform']}",
        f"backend='auto' chose: {m.get('bulk_backend', '?')} (the 'default threads' rows); "
        f"{m.get('bulk_backend_note', '')}",
        "io_uring rows: 256 sockets per batch, each socket's first option by a system call (which "
        "proves it is a socket), the others one submission per option",
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
    verdicts: Counter[str] = Counter()
    for name, value, goal, met in targets(results):
        shown = "n/a" if value is None else f"{value:.3f}"
        if goal.startswith("("):
            verdict = "reference"
        else:
            verdict = "skipped" if met is None else ("met" if met else "MISSED")
        verdicts[verdict] += 1
        parts.append(f"  {name:66s} {shown:>7s}  goal {goal:24s} {verdict}")
    for note in results["notes"]:
        parts.append(f"note: {note}")
    parts.append(summary(verdicts))
    return "\n".join(p for p in parts if p)


def summary(verdicts: Counter[str]) -> str:
    """The last lines: how many targets were met, and what a MISSED one means for the reader."""
    shown = [v for v in ("met", "MISSED", "reference", "skipped") if verdicts[v] or v != "skipped"]
    counts = ", ".join(f"{verdicts[v]} {v}" for v in shown)
    line = f"\nsummary: {counts} (of {sum(verdicts.values())} targets)"
    if verdicts["MISSED"]:
        line += (
            "\nMISSED means this run measured a ratio outside the target ka's developers set for its own "
            "speed (docs/performance/benchmarks.md); it is not an error, and ka sets the same options "
            "either way. The ratios move with the machine: other work on it (the load average above), "
            "a VM, the kernel; the C floor's own rows show how much the kernel leaves to gain."
        )
    return line
