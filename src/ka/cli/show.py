"""``ka show``: the keepalive state of a running process's TCP connections (Linux)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from .. import live
from .checks import EXIT_FAILED, EXIT_OK, EXIT_PERMISSION
from .filters import check_ports, connection_filter, matching, process_filter, states
from .format import compact, connection_data, print_json, settings_data, table, timer_data, timer_text

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


def _row(state: live.ConnectionState) -> list[str]:
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


def _process_block(pid: int, states: Sequence[live.ConnectionState]) -> str:
    owner = live.process_owner(pid)
    head = (
        f"process {pid} ({live.command_name(pid)}, uid {owner}, {live.netns_name(pid)}): "
        f"{len(states)} TCP connection{'s' if len(states) != 1 else ''}"
    )
    rows = [_row(s) for s in states]
    return head + "\n" + table(_HEADERS, rows, right={0, 5, 6, 7, 8, 9})


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
            print(_process_block(pid, shown))
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
        print("\n\n".join(_process_block(p.pid, p.states) for p in found))
    else:
        print(f"no process this user may see holds a TCP connection{matching(args, wanted)}.")
    if skipped:
        print("\n" + _skipped_note(skipped), file=sys.stderr)
    return code
