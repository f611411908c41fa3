"""``ka audit``: check the live connections of picked processes against rules (Linux)."""

from __future__ import annotations

import argparse
import os

from .. import audit as checking
from .. import live
from .checks import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PERMISSION,
    EXIT_UNREADABLE,
    EXIT_USAGE,
    UsageError,
    parse_duration,
    validated,
)
from .filters import add_filters, add_process_selection, connection_filter, process_filter, states
from .format import compact, print_json, settings_text, table

EXAMPLES = (
    "ka audit --all --max-detection 60s  # every connection of the host finds a dead peer within 60 s",
    "ka audit --unit postgresql --port 5432 --policy 'idle=60 interval=10 count=5'  # at least this policy",
    "ka audit --name redis --path-timeout probe.json --json  # idle below the probed path's timeout",
)

EXIT_CODES = {
    checking.report.CLEAN: EXIT_OK,
    checking.report.VIOLATIONS: EXIT_FAILED,
    checking.report.UNREADABLE_PERMISSION: EXIT_PERMISSION,
    checking.report.UNREADABLE_ERROR: EXIT_UNREADABLE,
}


def add_rule_arguments(parser: argparse.ArgumentParser) -> None:
    """The rule flags (``audit`` and ``exporter``); combinable, every one given must hold."""
    rules = parser.add_argument_group("rules (combinable: a connection must pass every one given)")
    rules.add_argument(
        "--policy",
        metavar="TEXT",
        help="each connection carries at least this policy: keepalive on, idle, interval and count "
        "no larger, a user timeout no longer where it sets one ('idle=60 interval=10 count=5', 'within=30s')",
    )
    rules.add_argument(
        "--max-detection",
        metavar="DURATION",
        help="a silent dead peer is found within DURATION (idle + interval x count; a user timeout "
        "counted by Linux's rule)",
    )
    rules.add_argument(
        "--path-timeout",
        metavar="DURATION|FILE",
        help="idle stays below a middlebox's idle timeout (a duration, or a `ka probe --json` result "
        "file), by a margin of max(2 s, a tenth)",
    )
    rules.add_argument(
        "--require-user-timeout", action="store_true", help="each connection has a TCP_USER_TIMEOUT"
    )


def rules_from(args: argparse.Namespace) -> list[checking.Rule]:
    """The rules the flags give, each checked; a UsageError for a bad one."""
    import ka

    rules: list[checking.Rule] = []
    if args.policy is not None:
        policy = validated(ka.KeepAlive.parse, args.policy)
        rules.append(validated(checking.AtLeastPolicy, policy))
    if args.max_detection is not None:
        rules.append(checking.MaxDetection(parse_duration(args.max_detection, "--max-detection")))
    if args.path_timeout is not None:
        text = args.path_timeout
        if os.path.exists(text) or text.endswith(".json"):
            rules.append(validated(checking.probe_result, text))
        else:
            rules.append(validated(checking.PathTimeout, parse_duration(text, "--path-timeout")))
    if args.require_user_timeout:
        rules.append(checking.RequireUserTimeout())
    return rules


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], json_parent: argparse.ArgumentParser
) -> None:
    parser = sub.add_parser(
        "audit",
        parents=[json_parent],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="check the live connections of processes against keepalive rules (Linux)",
        description="Read the keepalive values of the picked processes' TCP connections from the\n"
        "live sockets (as ka show does) and check each against every rule given. Prints each\n"
        "connection that breaks a rule (what it has, what it lacks) and a summary per process\n"
        f"and rule. Exit {EXIT_OK}: every connection passes; {EXIT_FAILED}: violations; {EXIT_PERMISSION}: a "
        "picked process\ncould not be read for lack of ptrace permission (each is named, with the cause); "
        f"{EXIT_UNREADABLE}:\none could not be read for another reason; {EXIT_USAGE}: bad usage.",
        epilog="examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES),
    )
    add_process_selection(parser, "needed: say which processes, or --all")
    add_filters(parser, "connected")
    add_rule_arguments(parser)
    parser.add_argument(
        "--limit",
        type=int,
        default=50,
        metavar="N",
        help="connections listed in text (default 50; 0: every one); --json lists all",
    )
    parser.add_argument(
        "--source",
        choices=live.SOURCES,
        default="auto",
        help="where TCP tables come from: sock_diag netlink for ka's own network namespace and "
        "/proc elsewhere (auto, the default), or always one of them",
    )
    parser.set_defaults(func=run)


def _violation_row(v: checking.Violation) -> list[str]:
    conn = v.connection
    return [
        str(conn.pid),
        v.command,
        str(conn.fd),
        str(conn.local),
        str(conn.remote),
        conn.state,
        settings_text(v.settings)
        + (f", dead peer {compact(live.dead_peer_after(v.settings))}" if v.settings.enabled else ""),
        "; ".join(f"{rule}: {lacks}" for rule, lacks in v.lacks.items()),
    ]


def _print_text(report: checking.Report, limit: int, code: int) -> None:
    rules = [r.name for r in report.rules]
    print(f"rules: {'; '.join(f'{r.name} ({r.description})' for r in report.rules)}")
    shown = report.violations if limit == 0 else report.violations[:limit]
    if shown:
        headers = ("PID", "COMMAND", "FD", "LOCAL", "REMOTE", "STATE", "HAS", "LACKS")
        print(table(headers, [_violation_row(v) for v in shown], right={0, 2}))
        if len(shown) < len(report.violations):
            print(f"... and {len(report.violations) - len(shown)} more (--limit 0 or --json lists every one)")
        print()
    if report.summaries:
        rows = [
            [str(s.pid), s.command, str(s.checked), *(str(s.violations[r]) for r in rules)]
            for s in report.summaries
        ]
        print(
            table(
                ("PID", "COMMAND", "CHECKED", *(r.upper() for r in rules)),
                rows,
                right=set(range(len(rules) + 3)) - {1},
            )
        )
    if report.unreadable:
        print(f"\nnot read ({len(report.unreadable)}):")
        for s in report.unreadable:
            print(f"  {s.pid} ({s.command}): {s.reason}")
    processes = len(report.summaries)
    verdict = {
        EXIT_OK: "every connection passes",
        EXIT_FAILED: f"{len(report.violations)} of them break a rule",
        EXIT_PERMISSION: "no violation among what was read, but processes could not be read (permission)",
        EXIT_UNREADABLE: "no violation among what was read, but processes could not be read",
    }[code]
    if not processes and not report.unreadable:
        verdict = "nothing to audit: no picked process holds a matching connection"
    print(
        f"\n{report.checked} connection{'s' if report.checked != 1 else ''} of {processes} "
        f"process{'es' if processes != 1 else ''} checked in {report.seconds:.2f} s: {verdict}."
    )


def run(args: argparse.Namespace) -> int:
    wanted = states(args.state, "connected")
    connections = connection_filter(args, wanted)
    rules = rules_from(args)
    if not rules:
        raise UsageError(
            "no rule: give --policy, --max-detection, --path-timeout and/or --require-user-timeout"
        )
    if args.limit < 0:
        raise UsageError(f"--limit {args.limit}: expected 0 (every one) or a positive number")
    live.check_platform()
    processes = process_filter(args)
    if processes.everything and not args.all:
        raise UsageError(
            "say which processes to audit: --pid, --name, --cgroup, --unit, or --all for the host"
        )
    report = checking.audit(rules, processes, connections, source=args.source)
    code = EXIT_CODES[checking.report.outcome(report)]
    if args.json:
        print_json({**checking.report.report_data(report), "exit_code": code})
    else:
        _print_text(report, args.limit, code)
    return code
