"""``ka apply``: changing the keepalive of connections a running process holds, in place (Linux)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

from .. import live
from .checks import EXIT_FAILED, EXIT_OK
from .filters import add_filters, check_pid, check_ports, filters_text, select, states
from .format import (
    connection_data,
    human,
    keepalive_style,
    paint,
    print_json,
    screenful,
    settings_data,
    settings_text,
    status_style,
    table,
    timer_data,
    timer_text,
)
from .policy_args import add_policy_arguments, policy_from

EXAMPLES: tuple[str, ...] = (
    "ka apply --pid 1234 --idle 60 --interval 10 --count 5 --dry-run  # what would change, changing nothing",
    "ka apply --pid 1234 --policy within=30s --local-port 8080  # the connections of port 8080, in place",
    "ka apply --pid 1234 --idle 2m --interval 10s --count 3 --state listen  # connections accepted later",
)

_HEADERS = ("FD", "LOCAL", "REMOTE", "STATE", "BEFORE", "AFTER", "TIMER", "RESULT")


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], json_parent: argparse.ArgumentParser
) -> None:
    apply = sub.add_parser(
        "apply",
        parents=[json_parent],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="change the keepalive of connections a running process holds, in place (Linux)",
        description="Set keepalive on the TCP connections a running, unmodified process holds:\n"
        "its descriptors are duplicated with pidfd_getfd (Linux 5.6+, ptrace permission), the\n"
        "options set on the shared sockets and read back. Every value is checked before\n"
        "anything is touched. Connections accepted later keep the listener's values unless\n"
        "the listener is changed too (--state listen): Linux copies them to new connections.\n"
        "More rows than fit the terminal are summed up (--full prints every row, --summary\n"
        "only the sums); failed connections are always listed.",
        epilog="examples:\n"
        "  ka apply --pid 1234 --idle 60 --interval 10 --count 5 --user-timeout auto --dry-run\n"
        "  ka apply --pid 1234 --idle 2m --interval 10s --count 3 --local-port 8080\n"
        "  ka apply --pid 1234 --idle 60 --interval 10 --count 5 --state listen   (new connections)",
    )
    apply.add_argument("--pid", type=int, required=True, help="the process whose connections change")
    add_policy_arguments(apply, "the policy (at least one, or KA_POLICY; values left out stay as they are)")
    add_filters(apply, "connected")
    apply.add_argument(
        "--dry-run", action="store_true", help="read and show what would change; change nothing"
    )
    rows = apply.add_mutually_exclusive_group()
    rows.add_argument("--summary", action="store_true", help="only the sums of what changed, and failures")
    rows.add_argument("--full", action="store_true", help="one row per connection, however many")
    apply.set_defaults(func=run)


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


def _styles(column: int, cell: str) -> str | None:
    if column in (4, 5):
        return keepalive_style(cell)
    return status_style(cell) if column == 7 else None


def changes_table(changes: list[live.Change], after: str) -> str:
    headers = (*_HEADERS[:5], after, *_HEADERS[6:])
    return table(headers, [_change_row(c) for c in changes], right={0}, styles=_styles)


def summary_lines(changes: list[live.Change]) -> list[str]:
    """One line per (result, before, after), most common first: ``300  applied  off 7200/75/9 ->
    on 60/10/5``; failed connections are not summed here (they are listed one by one)."""
    groups = Counter(
        (c.status.value, settings_text(c.before), settings_text(c.after))
        for c in changes
        if c.status != live.Status.FAILED
    )
    if not groups:
        return []
    count_width = max(len(str(n)) for n in groups.values())
    status_width = max(len(status) for status, _, _ in groups)
    before_width = max(len(before) for _, before, _ in groups)
    lines = []
    for (status, before, after), n in groups.most_common():
        lines.append(
            f"  {str(n).rjust(count_width)}  {paint(status, status_style(status))}"
            f"{' ' * (status_width - len(status))}  {paint(before, keepalive_style(before))}"
            f"{' ' * (before_width - len(before))} -> {paint(after, keepalive_style(after))}"
        )
    return lines


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
    after = "WOULD BE" if args.dry_run else "AFTER"
    limit = screenful()
    summed = args.summary or (not args.full and limit is not None and len(report.changes) > limit)
    if summed:
        print("\n".join(summary_lines(report.changes)))
        failed = [c for c in report.changes if c.status == live.Status.FAILED]
        if failed:
            print(changes_table(failed, after))
    else:
        print(changes_table(report.changes, after))
    totals = ", ".join(
        paint(f"{n} {status}", status_style(status) if n else None) for status, n in summary.items()
    )
    print(totals + "." + (" (--full prints every connection)" if summed and not args.summary else ""))
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
