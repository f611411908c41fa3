"""pika (checked against pika 1.4.4): ``ConnectionParameters(tcp_options=...)``. ::

    params = pika.ConnectionParameters("127.0.0.1", tcp_options=ka.integrations.pika.tcp_options(policy))

pika takes option NAMES as keys (``"TCP_KEEPIDLE"``, ``"TCP_KEEPINTVL"``, ``"TCP_KEEPCNT"``,
``"TCP_USER_TIMEOUT"``), looks them up in the ``socket`` module, and turns SO_KEEPALIVE on only
when one of the first three is given; a name Python lacks is logged and skipped. So: a policy
needs at least one of idle, interval and count (pika has no way to switch keepalive on alone);
on macOS, where Python has no ``socket.TCP_KEEPIDLE``, pika supports none of them
(``ValueError`` here rather than a warning in pika's log). A disabled policy gives only its
user timeout, if any: pika never turns SO_KEEPALIVE on by itself, so it stays off.
"""

from __future__ import annotations

import socket

from .._options import Option
from ..policy import KeepAlive, require_policy

__all__ = ["tcp_options"]

_PIKA_NAMES = {
    Option.IDLE: "TCP_KEEPIDLE",
    Option.INTERVAL: "TCP_KEEPINTVL",
    Option.COUNT: "TCP_KEEPCNT",
    Option.USER_TIMEOUT: "TCP_USER_TIMEOUT",
}


def tcp_options(policy: KeepAlive) -> dict[str, int]:
    """pika's ``tcp_options``: ``{"TCP_KEEPIDLE": 60, ...}`` (seconds, seconds, probes, ms)."""
    policy = require_policy(policy)
    options = {
        _PIKA_NAMES[option]: value for option, value in policy.spec.steps() if option is not Option.KEEPALIVE
    }
    if policy.enabled and not {"TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"} & options.keys():
        raise ValueError(
            f"{policy!r} cannot be given to pika: it turns SO_KEEPALIVE on only together with "
            "TCP_KEEPIDLE, TCP_KEEPINTVL or TCP_KEEPCNT, so give the policy idle, interval or count"
        )
    missing = [name for name in options if not hasattr(socket, name) and name != "TCP_USER_TIMEOUT"]
    if missing:
        raise ValueError(
            f"{policy!r} cannot be given to pika here: this Python has no socket.{missing[0]}, "
            "and pika sets only options the socket module names"
        )
    return options
