"""What ``show``, ``apply``, ``audit`` and ``exporter`` share: the flags that pick processes
(``--pid``, ``--name``, ``--cgroup``, ``--unit``, ``--all``) and connections (``--local-port``,
``--remote-port``, ``--port``, ``--remote``, ``--state``), and the filters they give."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .. import live
from ..live.filters import compile_name
from .checks import UsageError, validated


def port(text: str) -> int:
    """An argparse type: the number; whether it is a TCP port is ``check_ports``'s to say."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None


def add_filters(parser: argparse.ArgumentParser, default_state: str) -> None:
    group = parser.add_argument_group("filters (all given must hold)")
    group.add_argument("--local-port", type=port, metavar="N", help="only connections with this local port")
    group.add_argument("--remote-port", type=port, metavar="N", help="only connections with this remote port")
    group.add_argument("--port", type=port, metavar="N", help="only connections with this port at either end")
    group.add_argument(
        "--remote",
        action="append",
        metavar="ADDR",
        help="only connections whose remote end is ADDR: an address, a network, with or without "
        "a port (10.0.0.5, 10.0.0.0/8, 10.0.0.5:5432, [2001:db8::1]:443, :5432); repeated: any of them",
    )
    group.add_argument(
        "--state",
        action="append",
        metavar="STATE",
        help="only these TCP states, as ss names them (established, close-wait, listen, ...), "
        f"comma-separated or repeated; 'connected' is every state but listen, 'all' every one "
        f"(default: {default_state})",
    )


def add_process_selection(parser: argparse.ArgumentParser, everything: str) -> None:
    """The flags that pick processes; ``everything``: what no flag means, for the help."""
    group = parser.add_argument_group(
        "processes (each kind given narrows the choice; repeated values widen it)"
    )
    group.add_argument(
        "--pid", type=int, action="append", metavar="PID", help="this process; repeat for several"
    )
    group.add_argument(
        "--name",
        action="append",
        metavar="PATTERN",
        help="processes whose name or command line matches this regular expression (as pgrep, "
        "pgrep -f); repeat for several",
    )
    group.add_argument(
        "--cgroup",
        action="append",
        metavar="PATH",
        help="the processes of this cgroup v2 and those below it (/system.slice/x.service, or "
        "a directory under the cgroup2 mount)",
    )
    group.add_argument(
        "--unit", action="append", metavar="NAME", help="the processes of this systemd unit (its cgroup)"
    )
    group.add_argument("--all", action="store_true", help=f"every process of the host ({everything})")


def process_filter(args: argparse.Namespace) -> live.ProcessFilter:
    """The processes the selection flags pick; a UsageError for a bad value or a missing cgroup."""
    from ..live import cgroup

    pids = tuple(args.pid or ())
    for pid in pids:
        validated(live.check_pid, pid, "--pid")
    names = tuple(validated(compile_name, text, "--name") for text in args.name or ())
    if args.all and (pids or names or args.cgroup or args.unit):
        raise UsageError("--all picks every process: give it alone, or --pid/--name/--cgroup/--unit")
    groups = []
    try:
        groups += [cgroup.resolve(path) for path in args.cgroup or ()]
        groups += [validated(cgroup.of_unit, name) for name in args.unit or ()]
    except cgroup.CgroupError as exc:
        raise UsageError(str(exc)) from None
    for pid in pids:
        check_pid(pid)
    return live.ProcessFilter(pids, names, tuple(groups))


def connection_filter(args: argparse.Namespace, wanted: frozenset[str] | None) -> live.ConnectionFilter:
    """The connections the filter flags pick (``wanted``: the states, as ``states`` gives them)."""
    check_ports(args)
    remotes = tuple(
        validated(live.parse_remote, text, "--remote") for text in getattr(args, "remote", None) or ()
    )
    return live.ConnectionFilter(
        args.local_port, args.remote_port, getattr(args, "port", None), remotes, wanted
    )


def check_ports(args: argparse.Namespace) -> None:
    # Here rather than in the argparse type: the message names the flag, and --json reports it.
    for name in ("local_port", "remote_port", "port"):
        validated(live.check_port, getattr(args, name, None), "--" + name.replace("_", "-"))


def check_pid(pid: int) -> None:
    """A UsageError unless ``--pid`` names a running process (not a thread of one)."""
    validated(lambda: live.check_pid(pid, "--pid", running=True))


def states(values: Sequence[str] | None, default: str | None) -> frozenset[str] | None:
    """The states ``--state`` names (comma-separated or repeated), else ``default``'s."""
    names = [part for value in (values or []) for part in value.split(",") if part.strip()]
    if not names:
        return None if default is None else live.normalize_states([default])
    return validated(live.normalize_states, names)


def select(
    args: argparse.Namespace, conns: Sequence[live.Connection], states: frozenset[str] | None
) -> list[live.Connection]:
    return connection_filter(args, states).pick(conns)


def filters_text(args: argparse.Namespace, states: frozenset[str] | None) -> str:
    parts = connection_filter(args, None).describe()
    if states is not None:
        parts.append("state " + ",".join(args.state) if args.state else "every state but listen")
    return ", ".join(parts)


def matching(args: argparse.Namespace, states: frozenset[str] | None) -> str:
    text = filters_text(args, states)
    return f" matching {text}" if text else ""
