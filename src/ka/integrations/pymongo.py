"""pymongo (checked against pymongo 4.20.1): no socket hook; what its sockets get, and what ka can do.

pymongo opens its sockets itself (``pool_shared.py``, sync and asyncio alike), turns
SO_KEEPALIVE on for every connection and LOWERS the keepalive times to at most idle 120 s,
interval 10 s and 9 probes: a system default above a cap is replaced by the cap, one below it is
kept. It never raises a value and never sets ``TCP_USER_TIMEOUT``. MongoClient takes no socket
options and no socket factory. So, from inside the process:

- a policy at or below the caps can come from the system defaults (``ka.system.set_system_defaults`` or
  the sysctls in the container's network namespace): pymongo keeps them;
- nothing longer than the caps, nor ``enabled=False``, nor a user timeout, is reachable;

and from outside, ``ka apply --pid PID --remote-port 27017 ...`` (Linux 5.6+, ``pidfd_getfd`` with ptrace
permission over the process) sets any policy on the connections a running
process holds. ``keepalive_values()`` gives what pymongo's sockets carry on this machine.
"""

from __future__ import annotations

from ..policy import KeepAlive
from ..system import SystemDefaults, system_defaults

__all__ = ["PYMONGO_MAX_COUNT", "PYMONGO_MAX_IDLE", "PYMONGO_MAX_INTERVAL", "keepalive_values"]

#: pymongo's ``_MAX_TCP_KEEPIDLE``: the highest idle (seconds) it leaves on its sockets.
PYMONGO_MAX_IDLE = 120
#: pymongo's ``_MAX_TCP_KEEPINTVL``: the highest probe interval (seconds).
PYMONGO_MAX_INTERVAL = 10
#: pymongo's ``_MAX_TCP_KEEPCNT``: the highest probe count.
PYMONGO_MAX_COUNT = 9


def keepalive_values(system: SystemDefaults | None = None) -> KeepAlive:
    """The keepalive a pymongo connection carries given the system's defaults (default: this
    machine's, ``ka.system_defaults()``): each capped at pymongo's maximum, SO_KEEPALIVE on.
    Linux, macOS and BSD; on Windows pymongo sets 120 s / 10 s through ``SIO_KEEPALIVE_VALS``
    when the registry's values are larger."""
    system = system_defaults() if system is None else system
    return KeepAlive(
        min(system.idle, PYMONGO_MAX_IDLE),
        min(system.interval, PYMONGO_MAX_INTERVAL),
        min(system.count, PYMONGO_MAX_COUNT),
    )
