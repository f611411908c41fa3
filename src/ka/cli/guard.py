"""``ka guard``: a keepalive policy for every TCP connection of a cgroup, through BPF (Linux, root).

The work is ``ka.guard``'s; this module reads the flags, prints, and turns the errors into the
documented exit codes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .. import guard
from ..live import cgroup as cgroups
from ..live.cgroup import CgroupError
from ..policy import resolve_policy
from .checks import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PERMISSION,
    EXIT_REFUSED,
    EXIT_UNSUPPORTED,
    EXIT_USAGE,
    UsageError,
)
from .format import compact, print_json, table

EXAMPLES = (
    'ka guard attach "within=30s" --unit myapp.service   # every new connection of the service',
    "ka guard sweep --unit myapp.service                  # and the connections it already has",
    "ka guard list                                        # what is attached where, with counters",
)
EXIT_CODES: dict[type[guard.GuardError], int] = {
    guard.NotPermitted: EXIT_PERMISSION,
    guard.Unsupported: EXIT_UNSUPPORTED,
    guard.Refused: EXIT_REFUSED,
    guard.NotGuarded: EXIT_FAILED,
}


def _add_target(parser: argparse.ArgumentParser, *, by_id: bool = False) -> None:
    where = parser.add_argument_group("the cgroup (exactly one)").add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--cgroup", metavar="PATH", help="a cgroup v2 directory, or its path as /proc/PID/cgroup shows it"
    )
    where.add_argument("--unit", metavar="NAME", help="a systemd unit's cgroup (myapp means myapp.service)")
    where.add_argument("--pid", type=int, metavar="PID", help="the cgroup process PID runs in")
    if by_id:
        where.add_argument(
            "--cgroup-id", type=int, metavar="ID", help="by id (the directory under the bpffs's ka/)"
        )
        where.add_argument("--all", action="store_true", help="every ka attachment")


def _add_bpffs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bpffs",
        type=Path,
        default=guard.BPFFS,
        metavar="DIR",
        help=f"the BPF filesystem to pin in (default {guard.BPFFS}, mounted there when it is not)",
    )


def register(sub: argparse._SubParsersAction[Any], json_parent: argparse.ArgumentParser) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    command = sub.add_parser(
        "guard",
        formatter_class=raw,
        help="a policy for every TCP connection of a service or container, through BPF (Linux, root)",
        description="Attach a BPF sock_ops program to a cgroup v2 (a systemd unit, a container, a\n"
        "process's cgroup): every TCP connection established there from then on, outgoing or\n"
        "accepted, IPv4 or IPv6, gets the policy, whatever the program (static binaries,\n"
        "Go, clients that forget). The program is pinned in a BPF filesystem and outlives ka.\n"
        "`sweep` gives the policy to the connections that already exist. Needs root (CAP_BPF and\n"
        "CAP_NET_ADMIN; CAP_PERFMON for the sweep's iterator) and Linux 5.9+.",
        epilog="examples:\n  " + "\n  ".join(EXAMPLES) + "\n\n"
        f"exit codes: {EXIT_OK} ok, {EXIT_FAILED} failed (or nothing attached there), {EXIT_USAGE} bad "
        f"usage or no such cgroup,\n{EXIT_PERMISSION} missing permission, {EXIT_UNSUPPORTED} the kernel or "
        f"system lacks a piece, {EXIT_REFUSED} the kernel refused\nthe program or the attachment.",
    )
    actions = command.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    attach = actions.add_parser(
        "attach",
        parents=[json_parent],
        formatter_class=raw,
        help="guard a cgroup: the policy on every connection established there from now on",
        description="Attach the policy to a cgroup. Attaching again replaces the policy in place.\n"
        "Options are set once, when a connection is established: a program that sets its own\n"
        "later keeps them; values it set before connecting are replaced. A listener made before\n"
        "its process joined the cgroup is not covered (ka says so).",
        epilog="examples:\n"
        '  ka guard attach "within=30s" --unit myapp.service\n'
        '  ka guard attach "idle=60 interval=10 count=5" --cgroup /system.slice/redis.service --keep-own\n'
        '  ka guard attach "within=1m" --pid 4242 --sweep',
    )
    attach.add_argument(
        "policy", metavar="POLICY", help="the policy string: 'within=30s', 'idle=60 interval=10 count=5'"
    )
    _add_target(attach)
    attach.add_argument(
        "--keep-own",
        action="store_true",
        help="leave a connection alone when it already has SO_KEEPALIVE on (Linux 6.1+)",
    )
    attach.add_argument(
        "--sweep", action="store_true", help="then give the policy to existing connections too"
    )
    _add_bpffs(attach)
    attach.set_defaults(func=run, guard_action=_attach)

    listing = actions.add_parser(
        "list",
        parents=[json_parent],
        help="what is attached where, with the policy and the counters",
        description="Every ka attachment: the cgroup, the policy read back from the kernel, what the "
        "program did so far, and the listeners of the cgroup's processes it cannot cover.",
    )
    _add_bpffs(listing)
    listing.set_defaults(func=run, guard_action=_list)

    detach = actions.add_parser(
        "detach",
        parents=[json_parent],
        help="remove ka's program from a cgroup (connections keep the values they got)",
        description="Detach ka's program and remove its pins; new connections are left alone from then on. "
        "Connections that got the policy keep it. By hand: rm -r /sys/fs/bpf/ka/CGROUP-ID.",
    )
    _add_target(detach, by_id=True)
    _add_bpffs(detach)
    detach.set_defaults(func=run, guard_action=_detach)

    sweep = actions.add_parser(
        "sweep",
        parents=[json_parent],
        formatter_class=raw,
        help="give the policy to the connections a cgroup already has",
        description="Set the policy on the cgroup's existing connections: by a tcp iterator program\n"
        "(Linux 5.15+, BTF, CAP_PERFMON; sockets matched by their cgroup, no ptrace needed) or, where\n"
        "that cannot run, by `ka apply --pid` on each process of the cgroup. Says which was used\n"
        "and how many connections each reached.",
        epilog="examples:\n"
        "  ka guard sweep --unit myapp.service\n"
        "  ka guard sweep 'within=30s' --pid 4242 --method processes",
    )
    sweep.add_argument(
        "policy", metavar="POLICY", nargs="?", help="the policy (default: the one attached there)"
    )
    _add_target(sweep)
    sweep.add_argument(
        "--method", choices=guard.METHODS, default="auto", help="auto (default), iterator or processes"
    )
    sweep.add_argument(
        "--keep-own", action="store_true", default=None, help="leave connections with keepalive on alone"
    )
    _add_bpffs(sweep)
    sweep.set_defaults(func=run, guard_action=_sweep)


def _target(args: argparse.Namespace) -> Any:
    try:
        return guard.target(args.cgroup, unit=args.unit, pid=args.pid)
    except (ValueError, CgroupError) as exc:
        raise UsageError(str(exc)) from None


def _policy_text(policy: Any) -> str:
    return "-" if policy is None else str(policy)


def _listeners_text(listeners: list[guard.Listener], policy: object) -> list[str]:
    if not listeners:
        return []
    lines = [
        f"{len(listeners)} listener{'s' if len(listeners) != 1 else ''} of the cgroup's processes "
        "belong to another cgroup (made before the process joined): connections they accept are not guarded"
    ]
    for listener in listeners:
        lines.append(
            f"  pid {listener.pid} ({listener.command}) fd {listener.fd} {listener.local}: "
            f"socket in {listener.socket_cgroup}; fix: restart it inside the cgroup, or "
            f"ka apply --pid {listener.pid} --state listen --local-port {listener.local.port} "
            f"--policy '{policy}'"
        )
    return lines


def _attach(args: argparse.Namespace) -> int:
    try:
        policy = resolve_policy(args.policy)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    cgroup = _target(args)
    try:
        found = guard.attach(policy, cgroup.directory, keep_own=args.keep_own, bpffs=args.bpffs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    swept = guard.sweep(cgroup=cgroup.directory, bpffs=args.bpffs) if args.sweep else None
    listeners, _ = (swept.listeners, []) if swept else guard.uncovered_listeners(cgroup)
    if args.json:
        data = {
            **found.as_dict(),
            "updated": found.updated,
            "mounted_bpffs": found.mounted_bpffs,
            "uncovered_listeners": [listener.as_dict() for listener in listeners],
            "sweep": None if swept is None else swept.as_dict(),
        }
        print_json(data)
        return EXIT_OK
    verb = "policy replaced on" if found.updated else "guarding"
    print(
        f"{verb} cgroup {found.cgroup} (id {found.cgroup_id}): {found.policy}"
        + (", keep own" if found.keep_own else "")
    )
    detection = found.policy.detection_time if found.policy is not None else None
    print(
        "  every TCP connection established there from now on, outgoing or accepted, gets it"
        + (f"; a silent dead peer is found after {compact(detection)}" if detection else "")
    )
    print(
        f"  pinned at {found.pins} (link {found.link_id}, program {found.prog_id}); "
        f"undo: ka guard detach --cgroup {found.cgroup}"
    )
    for note in found.notes:
        print(f"note: {note}")
    if swept is not None:
        _print_sweep(swept)
    for line in _listeners_text(listeners, found.policy):
        print(f"warning: {line}" if not line.startswith("  ") else line, file=sys.stderr)
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    found = guard.attachments(args.bpffs)
    listeners: dict[int, list[guard.Listener]] = {}
    for item in found:
        if item.state == guard.ATTACHED and item.cgroup is not None:
            try:
                listeners[item.cgroup_id] = guard.uncovered_listeners(guard.target(item.cgroup))[0]
            except CgroupError:
                listeners[item.cgroup_id] = []
    if args.json:
        print_json(
            {
                "bpffs": str(args.bpffs),
                "attachments": [
                    {
                        **a.as_dict(),
                        "uncovered_listeners": [x.as_dict() for x in listeners.get(a.cgroup_id, [])],
                    }
                    for a in found
                ],
            }
        )
        return EXIT_OK
    if not found:
        print(f"no ka attachment (pins under {args.bpffs}/ka)")
        return EXIT_OK
    rows = []
    for a in found:
        c = a.counters
        rows.append(
            [
                a.cgroup or "-",
                str(a.cgroup_id),
                a.state,
                _policy_text(a.policy),
                "yes" if a.keep_own else "no",
                str(c.handled),
                str(c.applied),
                str(c.kept_own),
                str(c.options_failed) + (f" (errno {c.last_error})" if c.last_error else ""),
            ]
        )
    headers = ("CGROUP", "ID", "STATE", "POLICY", "KEEP-OWN", "HANDLED", "APPLIED", "KEPT", "OPTIONS FAILED")
    print(table(headers, rows, right={1, 5, 6, 7}))
    for a in found:
        for line in _listeners_text(listeners.get(a.cgroup_id, []), a.policy):
            print(line if line.startswith("  ") else f"{a.cgroup}: {line}")
        if a.state != guard.ATTACHED:
            print(f"{a.pins}: {a.state}; ka guard detach --cgroup-id {a.cgroup_id} removes it")
    return EXIT_OK


def _detach(args: argparse.Namespace) -> int:
    if args.all:
        ids = [a.cgroup_id for a in guard.attachments(args.bpffs)]
    elif args.cgroup_id is not None:
        ids = [args.cgroup_id]
    else:
        ids = [cgroups.cgroup_id(_target(args))]
    done = [guard.detach(cgroup_id=i, bpffs=args.bpffs) for i in ids]
    if args.json:
        print_json({"detached": [a.as_dict() for a in done]})
        return EXIT_OK
    if not done:
        print("nothing to detach")
    for a in done:
        c = a.counters
        print(
            f"detached from cgroup {a.cgroup or '(removed)'} (id {a.cgroup_id}) "
            f"after {c.handled} connections "
            f"({c.applied} applied, {c.kept_own} kept their own, {c.options_failed} options failed); "
            "new connections there are left alone"
        )
    return EXIT_OK


def _print_sweep(report: guard.SweepReport) -> None:
    how = {"iterator": "the tcp iterator", "processes": "ka apply on the cgroup's processes"}[report.method]
    print(f"swept cgroup {report.cgroup} with {report.policy} by {how}:")
    if report.fallback_reason:
        print(f"  (not by the iterator: {report.fallback_reason})")
    for r in report.reaches:
        seen = "TCP sockets" if r.method == "iterator" else "connections held"
        failed = "options failed" if r.method == "iterator" else "connections failed"
        print(
            f"  {r.netns}: {r.handled} connections of the cgroup (of {r.seen} {seen}): {r.applied} applied, "
            f"{r.kept_own} kept their own, {r.failed} {failed}"
            + (f" (errno {r.last_error})" if r.last_error else "")
        )
    for u in report.unreadable:
        print(f"  pid {u.pid} not reached: {u.reason}")


def _sweep(args: argparse.Namespace) -> int:
    cgroup = _target(args)
    try:
        report = guard.sweep(
            args.policy, cgroup.directory, keep_own=args.keep_own, method=args.method, bpffs=args.bpffs
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    code = EXIT_FAILED if report.failed or report.unreadable else EXIT_OK
    if args.json:
        print_json({**report.as_dict(), "exit_code": code})
        return code
    _print_sweep(report)
    for line in _listeners_text(report.listeners, report.policy):
        print(line, file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    try:
        return int(args.guard_action(args))
    except guard.GuardError as exc:
        code = next((c for kind, c in EXIT_CODES.items() if isinstance(exc, kind)), EXIT_FAILED)
        if args.json:
            print_json({"error": {"message": str(exc), "exit_code": code, "missing": exc.missing}})
        print(f"ka guard {args.action}: {exc}", file=sys.stderr)
        return code
    except CgroupError as exc:
        raise UsageError(str(exc)) from None
