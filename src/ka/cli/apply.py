"""``ka apply``: changing the keepalive of connections a running process holds, in place (Linux)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import live
from .checks import EXIT_FAILED, EXIT_OK
from .filters import check_pid, check_ports, filters_text, select, states
from .format import (
    connection_data,
    human,
    print_json,
    settings_data,
    settings_text,
    table,
    timer_data,
    timer_text,
)
from .policy_args import policy_from


def _change_data(change: live.Change) -> dict[str, Any]:
    return {
        **connection_data(change.connection),
        "status": change.status.value,
        "before": settings_data(change.before),
        "after": settings_data(change.after),
        "timer": timer_data(change.timer),
        "error": change.error,
        "errno": change.errno or None,
        "option": change.option,
    }


def _change_row(change: live.Change) -> list[str]:
    conn = change.connection
    status = change.status.value
    return [
        str(conn.fd),
        str(conn.local),
        str(conn.remote),
        conn.state,
        settings_text(change.before),
        settings_text(change.after),
        timer_text(change.timer),
        status if change.error is None else f"{status}: {change.error}",
    ]


def run(args: argparse.Namespace) -> int:
    check_ports(args)
    policy = policy_from(args)  # every value checked before anything is touched
    wanted = states(args.state, "connected")
    live.check_platform()
    check_pid(args.pid)
    everything = live.connections(args.pid)
    conns = select(args, everything, wanted)
    report = live.apply(args.pid, conns, policy, dry_run=args.dry_run)
    summary = {status.value: n for status, n in report.summary.items()}
    code = EXIT_OK if report.ok and conns else EXIT_FAILED
    if args.json:
        print_json(
            {
                "pid": args.pid,
                "command": live.command_name(args.pid),
                "policy": policy.as_dict(),
                "dry_run": args.dry_run,
                "filters": filters_text(args, wanted),
                "tcp_connections": len(everything),
                "matched": len(conns),
                "summary": summary,
                "connections": [_change_data(c) for c in report.changes],
                "exit_code": code,
            }
        )
        return code
    name = live.command_name(args.pid)
    print(
        f"process {args.pid} ({name}): {len(conns)} of {len(everything)} TCP connections match "
        f"({filters_text(args, wanted)}); policy {policy!r}"
        + (" -- dry run, nothing is changed" if args.dry_run else "")
    )
    if not conns:
        print("nothing matched: no connection was changed.", file=sys.stderr)
        return code
    rows = [_change_row(c) for c in report.changes]
    after = "WOULD BE" if args.dry_run else "AFTER"
    print(table(("FD", "LOCAL", "REMOTE", "STATE", "BEFORE", after, "TIMER", "RESULT"), rows, right={0}))
    print(", ".join(f"{n} {status}" for status, n in summary.items()) + ".")
    found_after = {
        live.dead_peer_after(c.after)
        for c in report.changes
        if c.after is not None and c.status != live.Status.FAILED
    }
    if len(found_after) == 1 and None not in found_after:
        (seconds,) = found_after
        verb = "would be" if args.dry_run else "is now"
        print(f"A silent dead peer {verb} found after {human(seconds or 0)} on these connections.")
    return code
