"""Option identifiers and platform limits shared by both implementations.

The numbers mirror the shim (``KA_OPT_*``, ``KA_MAX_*`` in ``_ka_posix.h``/``_ka_windows.h``);
tests check the compiled core and every OS branch (tests/test_platforms.py) report the same.
This module knows the platform by ``sys.platform`` only: no system calls.
"""

from __future__ import annotations

import enum
import socket
import sys
from typing import NamedTuple


class Option(enum.IntEnum):
    """The socket option a call was setting or reading when it failed."""

    NONE = 0
    KEEPALIVE = 1
    IDLE = 2
    INTERVAL = 3
    COUNT = 4
    USER_TIMEOUT = 5

    @property
    def system_name(self) -> str:
        """The option's name in the system headers, e.g. ``TCP_KEEPIDLE``."""
        return _SYSTEM_NAMES[self]

    @property
    def field(self) -> str:
        """The ``ka.protocol.Spec`` field (and ``ReadResult`` column) holding this option's value."""
        return _FIELDS[self]

    def __str__(self) -> str:
        return self.system_name


class Limits(NamedTuple):
    """Accepted ranges on this platform; a maximum of 0 means the knob is not supported."""

    max_idle: int
    max_interval: int
    max_count: int
    max_user_timeout_ms: int


def _platform_key(platform: str) -> str:
    if platform.startswith("linux"):
        return "linux"
    if platform == "darwin":
        return "darwin"
    if platform.startswith(("freebsd", "dragonfly", "netbsd", "openbsd")):
        return "freebsd"
    if platform == "win32":
        return "windows"
    return "other"  # Cygwin included: a POSIX layer with int descriptors (the header's "other")


# Keep in step with _ka_posix.h / _ka_windows.h.
LIMITS_BY_PLATFORM = {
    "linux": Limits(32767, 32767, 127, 2147483647),
    # xnu tcp_timer.c compares idle and interval as int32 milliseconds; TCP_RXT_CONNDROPTIME is
    # int seconds stored as milliseconds.
    "darwin": Limits(2147483, 2147483, 2147483647, 2147483000),
    "freebsd": Limits(2147483, 2147483, 2147483647, 0),
    "windows": Limits(4294967, 4294967, 255, 2147483647),
    "other": Limits(32767, 32767, 127, 0),
}

# The largest idle + interval * count (seconds) a kernel's keepalive timer holds where it adds them
# in 32 bits; a larger sum wraps and the connection is dropped at the first expiry, without a probe.
# XNU: uint32 milliseconds (tcp_timer.h TCP_CONN_KEEPIDLE + TCP_CONN_MAXIDLE, compared in
# tcp_timer.c tcp_timers TCPT_KEEP). FreeBSD: u_int ticks (tcp_timer.c tcp_timer_keep,
# TP_KEEPIDLE + TP_MAXIDLE), UINT_MAX / 2000 for any kern.hz up to 2000, as the idle cap assumes.
# Linux counts probes and Windows documents no such sum: no limit there.
MAX_DETECTION_BY_PLATFORM: dict[str, int | None] = {
    "linux": None,
    "darwin": 4294967,
    "freebsd": 2147483,
    "windows": None,
    "other": None,
}


class ListenerFacts(NamedTuple):
    """How an OS treats keepalive on listening sockets: the one table ``ka.capabilities()`` and
    ``ka.server``'s ``Platform`` values read.

    ``listener_inherits``: accepted sockets get the listener's keepalive options (macOS copies
    SO_KEEPALIVE, interval and count but not the idle, so it counts as no; Windows documents no
    inheritance). ``listener_safe``: keepalive may be set on a listening socket (not on macOS).
    ``counts_queue``: the accept queue length can be read (Linux ``TCP_INFO``).
    """

    listener_inherits: bool
    listener_safe: bool
    counts_queue: bool


LISTENER_FACTS = {
    "linux": ListenerFacts(True, True, True),
    "freebsd": ListenerFacts(True, True, False),
    "darwin": ListenerFacts(False, False, False),
    "windows": ListenerFacts(False, True, False),
    "other": ListenerFacts(False, True, False),
}
PLATFORM_CODES = {"linux": 1, "darwin": 2, "freebsd": 3, "windows": 4, "other": 5}

PLATFORM = _platform_key(sys.platform)
LIMITS = LIMITS_BY_PLATFORM[PLATFORM]
LISTENERS = LISTENER_FACTS[PLATFORM]

_FIELDS = {
    Option.NONE: "",
    Option.KEEPALIVE: "enabled",
    Option.IDLE: "idle",
    Option.INTERVAL: "interval",
    Option.COUNT: "count",
    Option.USER_TIMEOUT: "user_timeout_ms",
}
_IDLE_NAME = "TCP_KEEPALIVE" if PLATFORM == "darwin" else "TCP_KEEPIDLE"
_USER_TIMEOUT_NAMES = {"darwin": "TCP_RXT_CONNDROPTIME", "windows": "TCP_MAXRTMS"}
_SYSTEM_NAMES = {
    Option.NONE: "none",
    Option.KEEPALIVE: "SO_KEEPALIVE",
    Option.IDLE: _IDLE_NAME,
    Option.INTERVAL: "TCP_KEEPINTVL",
    Option.COUNT: "TCP_KEEPCNT",
    Option.USER_TIMEOUT: _USER_TIMEOUT_NAMES.get(PLATFORM, "TCP_USER_TIMEOUT"),
}

IPPROTO_TCP = 6  # the same number on every OS ka supports
SIO_KEEPALIVE_VALS = 0x98000004  # _WSAIOW(IOC_VENDOR, 4)
WSAEINVAL, WSAENOPROTOOPT = 10022, 10042


class OSCalls(NamedTuple):
    """One OS's socket-option numbers and rules, as its shim header uses them.

    ``numbers``: the IPPROTO_TCP option number of each knob, None where the OS has none.
    ``user_timeout_unit_ms``: 1 where the user timeout takes milliseconds, 1000 for seconds.
    ``user_timeout_fallback``: Windows' TCP_MAXRT (seconds), tried where TCP_MAXRTMS is missing.
    ``knob_reads_refused``: getsockopt of the knobs answers ENOPROTOOPT (NetBSD's tcp_ctloutput,
    tcp_usrreq.c 1.209): read as unknown, not as a failure.
    """

    name: str
    sol_socket: int
    so_keepalive: int
    numbers: dict[Option, int | None]
    user_timeout_unit_ms: int
    user_timeout_fallback: int | None
    windows: bool
    knob_reads_refused: bool = False


def _calls(name: str, sol: int, keepalive: int, numbers: tuple[int | None, ...], unit: int = 1) -> OSCalls:
    knobs = dict(zip((Option.IDLE, Option.INTERVAL, Option.COUNT, Option.USER_TIMEOUT), numbers))
    windows = name == "windows"
    return OSCalls(name, sol, keepalive, knobs, unit, 5 if windows else None, windows, name == "netbsd")


# Each OS's SDK header values (tools/platform_constants.c checks them against the real headers).
OS_CALLS = {
    "linux": _calls("linux", 1, 9, (4, 5, 6, 18)),
    "darwin": _calls("darwin", 0xFFFF, 8, (0x10, 0x101, 0x102, 0x80), unit=1000),
    "freebsd": _calls("freebsd", 0xFFFF, 8, (256, 512, 1024, None)),
    "netbsd": _calls("netbsd", 0xFFFF, 8, (3, 5, 6, None)),
    "openbsd": _calls("openbsd", 0xFFFF, 8, (None, None, None, None)),
    "windows": _calls("windows", 0xFFFF, 8, (3, 17, 16, 14)),
}


def _here() -> OSCalls:
    """This OS's calls: the stdlib's numbers where it has them, the SDK values otherwise."""
    name = next((n for n in ("darwin", "netbsd", "openbsd") if sys.platform.startswith(n)), PLATFORM)
    known = OS_CALLS.get(name)
    numbers: dict[Option, int | None] = {}
    for option in (Option.IDLE, Option.INTERVAL, Option.COUNT, Option.USER_TIMEOUT):
        value = getattr(socket, _SYSTEM_NAMES[option], None)
        if value is None and known is not None:
            value = known.numbers[option]
        if option is Option.USER_TIMEOUT and (known is None or known.numbers[option] is None):
            value = None  # only where the shim maps the user timeout
        numbers[option] = value
    if known is None:
        return OSCalls(name, socket.SOL_SOCKET, socket.SO_KEEPALIVE, numbers, 1, None, False)
    return known._replace(sol_socket=socket.SOL_SOCKET, so_keepalive=socket.SO_KEEPALIVE, numbers=numbers)


HERE = _here()

# (level, option number) for the stdlib socket module; None where this OS has no such option.
SOCKET_NUMBERS: dict[Option, tuple[int, int] | None] = {
    Option.KEEPALIVE: (HERE.sol_socket, HERE.so_keepalive),
    **{o: None if n is None else (IPPROTO_TCP, n) for o, n in HERE.numbers.items()},
}

USER_TIMEOUT_SEMANTICS = {
    "linux": "TCP_USER_TIMEOUT (ms): sent data unacknowledged, or keepalive probes unanswered, this long",
    "darwin": "TCP_RXT_CONNDROPTIME (s, rounded up): retransmitting unacknowledged data this long",
    "windows": "TCP_MAXRTMS (ms; TCP_MAXRT in s where missing): retransmitting unacknowledged data this long",
}


def user_timeout_value(ms: int, calls: OSCalls = HERE) -> int:
    """The value the OS's user-timeout option takes for ``ms`` milliseconds (seconds rounded up)."""
    return -(-ms // calls.user_timeout_unit_ms)
