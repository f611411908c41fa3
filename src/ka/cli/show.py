"""``ka show``: the keepalive state of a running process's TCP connections (Linux)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from .. import live
from .checks import EXIT_OK
from .filters import check_pid, check_ports, matching, select, states
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


def run(args: argparse.Namespace) -> int:
    check_ports(args)
    wanted = states(args.state, None)
    live.check_platform()
    if args.pid is not None:
        check_pid(args.pid)
        conns = select(args, live.connections(args.pid), wanted)
        shown = live.read(args.pid, conns)
        if args.json:
            print_json({"processes": [_process_data(args.pid, shown)], "skipped": []})
        elif shown:
            print(_process_block(args.pid, shown))
        else:
            name = live.command_name(args.pid)
            print(f"process {args.pid} ({name}) holds no TCP connection{matching(args, wanted)}.")
        return EXIT_OK

    found, skipped = live.scan(local_port=args.local_port, remote_port=args.remote_port, states=wanted)
    if args.json:
        print_json(
            {
                "processes": [_process_data(p.pid, p.states) for p in found],
                "skipped": [s._asdict() for s in skipped],
            }
        )
        return EXIT_OK
    if found:
        print("\n\n".join(_process_block(p.pid, p.states) for p in found))
    else:
        print(f"no process this user may see holds a TCP connection{matching(args, wanted)}.")
    if skipped:
        pids = ", ".join(str(s.pid) for s in skipped[:10]) + (" ..." if len(skipped) > 10 else "")
        print(
            f"\nnote: {len(skipped)} process{'es' if len(skipped) != 1 else ''} skipped, most without ptrace "
            f"permission ({pids}): run as their user, or as root, to see them.",
            file=sys.stderr,
        )
    return EXIT_OK
