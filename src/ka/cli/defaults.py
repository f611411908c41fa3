"""``ka defaults``: the system's keepalive sysctls and what they mean; ``--set`` writes them."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import ka

from .. import live
from .._options import PLATFORM
from ..system import set_system_defaults
from .checks import EXIT_OK, UsageError, parse_duration, seconds, validated
from .format import human, print_json

_SET_KEYS = {
    "idle": "idle",
    "time": "idle",
    "tcp_keepalive_time": "idle",
    "interval": "interval",
    "intvl": "interval",
    "tcp_keepalive_intvl": "interval",
    "count": "count",
    "probes": "count",
    "tcp_keepalive_probes": "count",
}


def _parse_set(pairs: Sequence[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        field = _SET_KEYS.get(key.strip().lower())
        if not sep or field is None:
            raise UsageError(f"--set takes KEY=VALUE with KEY one of idle, interval, count; got {pair!r}")
        if field in values:
            raise UsageError(f"--set names {field} twice")
        if field == "count":
            try:
                values[field] = int(value)
            except ValueError:
                raise UsageError(f"count {value!r} is not a whole number of probes") from None
        else:
            values[field] = seconds(parse_duration(value, field))
    return values


def _defaults_data(defaults: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "platform": PLATFORM,
        "idle": defaults.idle,
        "interval": defaults.interval,
        "count": defaults.count,
        "detection_time": defaults.detection_time,
        "source": defaults.source,
        "description": f"a dead peer is found after {human(defaults.detection_time)}",
    }
    if PLATFORM == "linux":
        data["network_namespace"] = live.netns_name()
    return data


def _print_defaults(data: dict[str, Any], heading: str) -> None:
    idle, interval, count = data["idle"], data["interval"], data["count"]
    where = f", network namespace {data['network_namespace']}" if "network_namespace" in data else ""
    print(f"{heading} ({data['source']}{where}):")
    if data["platform"] == "linux":
        names = (
            "net.ipv4.tcp_keepalive_time",
            "net.ipv4.tcp_keepalive_intvl",
            "net.ipv4.tcp_keepalive_probes",
        )
    else:
        names = ("idle", "interval", "count")
    width = max(len(n) for n in names)
    print(f"  {names[0]:<{width}} = {idle:<6} first probe after {human(idle)} of silence")
    print(f"  {names[1]:<{width}} = {interval:<6} then one probe every {human(interval)}")
    print(f"  {names[2]:<{width}} = {count:<6} the connection is dropped after {count} unanswered probes")
    print(
        f"A dead peer is found after {human(data['detection_time'])} "
        f"({idle} + {interval} x {count} = {data['detection_time']} s) on a socket that turns keepalive "
        "on and sets nothing else.\nKeepalive stays off unless a program turns it on (SO_KEEPALIVE)."
    )


def run(args: argparse.Namespace) -> int:
    if args.set:
        values = _parse_set(args.set)
        validated(lambda: ka.KeepAlive(**values))  # every value checked before anything is written
        defaults = set_system_defaults(**values)
        heading = "System keepalive defaults now"
    else:
        defaults = ka.system_defaults()
        heading = "System keepalive defaults"
    data = _defaults_data(defaults)
    if args.json:
        print_json(data)
    else:
        _print_defaults(data, heading)
    return EXIT_OK
