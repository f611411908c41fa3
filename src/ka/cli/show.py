"""``ka show``: the keepalive state of a running process's TCP connections (Linux)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

from .. import live
from .checks import EXIT_FAILED, EXIT_OK, EXIT_PERMISSION
from .filters import (
    add_filters,
    add_process_selection,
    check_ports,
    connection_filter,
    matching,
    process_filter,
    states,
)
from .format import (
    compact,
    connection_data,
    human,
    keepalive_style,
    paint,
    print_json,
    screenful,
    settings_data,
    settings_text,
    table,
    timer_data,
    timer_text,
)

EXAMPLES: tuple[str, ...] = (
    "ka show --pid 1234  # keepalive of every TCP connection of process 1234",
    "ka show --local-port 443 --summary  # how many connections of port 443 have which values",
    "ka show --state established --json  # every process you may see, for scripts",
)

_PROCESS_HEADERS = ("PID", "COMMAND")
_HEADERS = (
    "FD",
    "LOCAL",
    "REMOTE",
    "STATE",
    "KEEPALIVE",
    "IDLE",
    "INTVL",
    "CNT",
    "USER-TO",
    "DEAD PEER",
    "TIMER",
)
_RIGHT = {0, 5, 6, 7, 8, 9}  # FD and the numbers, counted without the process columns


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], json_parent: argparse.ArgumentParser
) -> None:
    show = sub.add_parser(
        "show",
        parents=[json_parent],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="the keepalive state of a running process's TCP connections (Linux)",
        description="List the TCP connections of a process (or of every process you may see)\n"
        "with their keepalive values, read from the live sockets through pidfd_getfd (Linux\n"
        "5.6+, ptrace permission), and the timer the kernel runs on each now (from\n"
        "/proc/PID/net/tcp, as ss -tno shows it), in one table. Processes you may not reach\n"
        "are skipped with a note. More rows than fit the terminal are summed up: how many\n"
        "connections have which values (--full prints every row, --summary only the sums).",
        epilog="examples:\n  ka show --pid 1234 --state established\n  sudo ka show --local-port 443 --json",
    )
    add_process_selection(show, "the default: every process you may see")
    add_filters(show, "all")
    rows = show.add_mutually_exclusive_group()
    rows.add_argument(
        "--summary", action="store_true", help="only how many connections have which keepalive values"
    )
    rows.add_argument("--full", action="store_true", help="every connection, however many")
    show.set_defaults(func=run)


def _cells(state: live.ConnectionState) -> list[str]:
    conn, s = state.connection, state.settings
    if s is None:
        cells = ["?", "?", "?", "?", "?", state.error or "?"]
    else:
        cells = [
            "on" if s.enabled else "off",
            "?" if s.idle is None else str(s.idle),
            "?" if s.interval is None else str(s.interval),
            "?" if s.count is None else str(s.count),
            compact(s.user_timeout) if s.user_timeout else "-",
            compact(live.dead_peer_after(s)),
        ]
    return [str(conn.fd), str(conn.local), str(conn.remote), conn.state, *cells, timer_text(conn.timer)]


class _Shown(NamedTuple):
    """One process's connections, as one part of the table."""

    pid: int
    states: Sequence[live.ConnectionState]


def connections_table(processes: Sequence[_Shown]) -> str:
    """One table (one header) for every connection; the process columns when there are several."""
    several = len(processes) > 1
    headers = (*_PROCESS_HEADERS, *_HEADERS) if several else _HEADERS
    shift = len(_PROCESS_HEADERS) if several else 0
    rows: list[list[str]] = []
    for proc in processes:
        first = [str(proc.pid), live.command_name(proc.pid)] if several else []
        rows.extend([*first, *_cells(state)] for state in proc.states)
    keepalive_column = shift + _HEADERS.index("KEEPALIVE")

    def styles(column: int, cell: str) -> str | None:
        return keepalive_style(cell) if column == keepalive_column else None

    right = {i + shift for i in _RIGHT} | ({0} if several else set())
    return table(headers, rows, right=right, styles=styles)


def _group_text(settings: Any, error: str | None) -> tuple[str, str]:
    if settings is None:
        return "?", f"not read: {error or 'unknown'}"
    if not settings.enabled:
        return settings_text(settings), "keepalive off: a silent dead peer is never found"
    after = live.dead_peer_after(settings)
    if after is None:
        return settings_text(settings), "keepalive on"
    return settings_text(settings), f"a silent dead peer is found after {human(after)}"


def summary_lines(processes: Sequence[_Shown]) -> list[str]:
    """``320 TCP connections in 2 processes:`` and one line per set of values, most common first:
    ``300  off 7200/75/9  keepalive off: ...``."""
    groups: Counter[tuple[str, str]] = Counter()
    for proc in processes:
        for state in proc.states:
            groups[_group_text(state.settings, state.error)] += 1
    total = sum(groups.values())
    where = f" in {len(processes)} processes" if len(processes) != 1 else f" of process {processes[0].pid}"
    lines = [f"{total} TCP connection{'s' if total != 1 else ''}{where}:"]
    counts = [str(n) for _, n in groups.most_common()]
    values = [text for (text, _), _ in groups.most_common()]
    count_width, value_width = max(map(len, counts)), max(map(len, values))
    for (value, meaning), n in groups.most_common():
        padded = paint(value, keepalive_style(value)) + " " * (value_width - len(value))
        lines.append(f"  {str(n).rjust(count_width)}  {padded}  {meaning}")
    return lines


def _print(args: argparse.Namespace, processes: Sequence[_Shown], head: str | None) -> None:
    rows = sum(len(p.states) for p in processes)
    limit = screenful()
    summary_only = args.summary or (not args.full and limit is not None and rows > limit)
    if head is not None:
        print(head)
    if not summary_only:
        print(connections_table(processes))
        print()
    print("\n".join(summary_lines(processes)))
    if summary_only and not args.summary:
        print(f"({rows} rows do not fit the terminal: --full prints every one)")


def _process_head(pid: int, count: int) -> str:
    owner = live.process_owner(pid)
    return (
        f"process {pid} ({live.command_name(pid)}, uid {owner}, {live.netns_name(pid)}): "
        f"{count} TCP connection{'s' if count != 1 else ''}"
    )


def _process_data(pid: int, states: Sequence[live.ConnectionState]) -> dict[str, Any]:
    return {
        "pid": pid,
        "command": live.command_name(pid),
        "uid": live.process_owner(pid),
        "network_namespace": live.netns_name(pid),
        "connections": [
            {
                **connection_data(s.connection),
                "keepalive": settings_data(s.settings),
                "timer": timer_data(s.connection.timer),
                "error": s.error,
            }
            for s in states
        ],
    }


def _skipped_note(skipped: Sequence[live.Skipped]) -> str:
    """The processes skipped, named, grouped by the same cause."""
    causes: dict[str, list[str]] = {}
    for s in skipped:
        reason = s.reason if s.permission else f"cannot be read: {s.reason}"
        causes.setdefault(reason, []).append(f"{s.pid} ({s.command})")
    lines = [f"note: {len(skipped)} process{'es' if len(skipped) != 1 else ''} skipped:"]
    for reason, names in causes.items():
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        lines.append(f"  {shown}: {reason}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    check_ports(args)
    wanted = states(args.state, None)
    connections = connection_filter(args, wanted)
    live.check_platform()
    processes = process_filter(args)
    if len(processes.pids) == 1 and not (processes.names or processes.cgroups):
        (pid,) = processes.pids
        conns = connections.pick(live.connections(pid))
        shown = live.read(pid, conns)
        if args.json:
            print_json({"processes": [_process_data(pid, shown)], "skipped": []})
        elif shown:
            _print(args, [_Shown(pid, shown)], _process_head(pid, len(shown)))
        else:
            name = live.command_name(pid)
            print(f"process {pid} ({name}) holds no TCP connection{matching(args, wanted)}.")
        return EXIT_OK

    found, skipped, _sources = live.scan(processes, connections)
    refused = [s for s in skipped if s.pid in processes.pids]
    code = EXIT_PERMISSION if any(s.permission for s in refused) else EXIT_FAILED if refused else EXIT_OK
    if args.json:
        print_json(
            {
                "processes": [_process_data(p.pid, p.states) for p in found],
                "skipped": [s._asdict() for s in skipped],
                **({"exit_code": code} if code else {}),
            }
        )
        return code
    if found:
        head = _process_head(found[0].pid, len(found[0].states)) if len(found) == 1 else None
        _print(args, [_Shown(p.pid, p.states) for p in found], head)
    else:
        print(f"no process this user may see holds a TCP connection{matching(args, wanted)}.")
    if skipped:
        print("\n" + _skipped_note(skipped), file=sys.stderr)
    return code
