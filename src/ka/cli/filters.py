"""What ``show`` and ``apply`` share: the process and the filters that pick its connections."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .. import live
from .checks import validated


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
    group.add_argument(
        "--state",
        action="append",
        metavar="STATE",
        help="only these TCP states, as ss names them (established, close-wait, listen, ...), "
        f"comma-separated or repeated; 'connected' is every state but listen, 'all' every one "
        f"(default: {default_state})",
    )


def check_ports(args: argparse.Namespace) -> None:
    # Here rather than in the argparse type: the message names the flag, and --json reports it.
    for name in ("local_port", "remote_port"):
        validated(live.check_port, getattr(args, name), "--" + name.replace("_", "-"))


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
    return live.select(conns, local_port=args.local_port, remote_port=args.remote_port, states=states)


def filters_text(args: argparse.Namespace, states: frozenset[str] | None) -> str:
    parts = []
    if args.local_port is not None:
        parts.append(f"local port {args.local_port}")
    if args.remote_port is not None:
        parts.append(f"remote port {args.remote_port}")
    if states is not None:
        parts.append("state " + ",".join(args.state) if args.state else "every state but listen")
    return ", ".join(parts)


def matching(args: argparse.Namespace, states: frozenset[str] | None) -> str:
    text = filters_text(args, states)
    return f" matching {text}" if text else ""
