"""The policy flags of ``apply`` and ``listen``, and the policy they give."""

from __future__ import annotations

import argparse
import os
from typing import Any

import ka

from .checks import UsageError, parse_duration, seconds, validated


def add_policy_arguments(parser: argparse.ArgumentParser, title: str) -> None:
    values = parser.add_argument_group(title)
    values.add_argument("--idle", metavar="DURATION", help="silence before the first probe (TCP_KEEPIDLE)")
    values.add_argument("--interval", metavar="DURATION", help="time between probes (TCP_KEEPINTVL)")
    values.add_argument(
        "--count", type=int, metavar="N", help="unanswered probes before the drop (TCP_KEEPCNT)"
    )
    values.add_argument(
        "--user-timeout",
        metavar="DURATION",
        help="TCP_USER_TIMEOUT: 'auto' (idle + interval x count), 0 (the system's), or a duration",
    )
    values.add_argument("--off", action="store_true", help="turn keepalive off instead")
    values.add_argument(
        "--policy",
        metavar="TEXT",
        help="the whole policy in one string: 'idle=60 interval=10 count=5', 'within=30s', 'off' "
        "(default: the KA_POLICY environment variable when no value is given)",
    )


def policy_from(args: argparse.Namespace) -> ka.KeepAlive:
    """The policy from --idle/--interval/--count/--user-timeout/--off, or --policy, or KA_POLICY."""
    given = [args.idle, args.interval, args.count, args.user_timeout]
    flags = args.off or any(v is not None for v in given)
    if args.policy is not None:
        if flags:
            raise UsageError(
                "--policy gives the whole policy: use it or --idle/--interval/--count/--user-timeout/--off, "
                "not both"
            )
        return validated(ka.KeepAlive.parse, args.policy)
    if not flags:
        if not os.environ.get("KA_POLICY", "").strip():
            what = "nothing to apply" if args.command == "apply" else "no policy"
            raise UsageError(
                f"{what}: give --idle, --interval, --count, --user-timeout, --off or --policy, "
                "or set KA_POLICY"
            )
        return validated(ka.resolve_policy, None)
    if args.off and any(v is not None for v in given[:3]):
        raise UsageError("--off turns keepalive off: it takes no --idle, --interval or --count")
    idle = None if args.idle is None else seconds(parse_duration(args.idle, "--idle"))
    interval = None if args.interval is None else seconds(parse_duration(args.interval, "--interval"))
    user_timeout: Any = None
    if args.user_timeout is not None:
        text = args.user_timeout.strip().lower()
        user_timeout = "auto" if text == "auto" else seconds(parse_duration(text, "--user-timeout"))
    if args.off:
        return validated(lambda: ka.KeepAlive(enabled=False, user_timeout=user_timeout))
    return validated(lambda: ka.KeepAlive(idle, interval, args.count, user_timeout=user_timeout))
