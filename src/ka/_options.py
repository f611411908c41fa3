"""Option identifiers and platform limits shared by both implementations.

The numbers mirror ``_platform.h`` (``KA_OPT_*``, ``KA_MAX_*``); a test checks the compiled core
reports the same. This module knows the platform by ``sys.platform`` only: no system calls.
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
    if platform in ("win32", "cygwin"):
        return "windows"
    return "other"


# Keep in step with _platform.h.
LIMITS_BY_PLATFORM = {
    "linux": Limits(32767, 32767, 127, 2147483647),
    "darwin": Limits(4294967, 4294967, 2147483647, 0),
    "freebsd": Limits(2147483, 2147483, 2147483647, 0),
    "windows": Limits(4294967, 4294967, 255, 0),
    "other": Limits(32767, 32767, 127, 0),
}
PLATFORM_CODES = {"linux": 1, "darwin": 2, "freebsd": 3, "windows": 4, "other": 5}

PLATFORM = _platform_key(sys.platform)
LIMITS = LIMITS_BY_PLATFORM[PLATFORM]

_IDLE_NAME = "TCP_KEEPALIVE" if PLATFORM == "darwin" else "TCP_KEEPIDLE"
_SYSTEM_NAMES = {
    Option.NONE: "none",
    Option.KEEPALIVE: "SO_KEEPALIVE",
    Option.IDLE: _IDLE_NAME,
    Option.INTERVAL: "TCP_KEEPINTVL",
    Option.COUNT: "TCP_KEEPCNT",
    Option.USER_TIMEOUT: "TCP_USER_TIMEOUT",
}

# (level, option number) for the stdlib socket module; None where this Python build lacks it.
# Linux values are fixed by the kernel ABI; the fallback covers Pythons built on old headers.
_LINUX_NUMBERS = {"TCP_KEEPIDLE": 4, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 6, "TCP_USER_TIMEOUT": 18}
_WINDOWS_NUMBERS = {"TCP_KEEPIDLE": 3, "TCP_KEEPINTVL": 17, "TCP_KEEPCNT": 16}
# xnu bsd/netinet/tcp.h; Python exposes TCP_KEEPALIVE only since 3.10.
_DARWIN_NUMBERS = {"TCP_KEEPALIVE": 0x10, "TCP_KEEPINTVL": 0x101, "TCP_KEEPCNT": 0x102}


def _number(name: str) -> int | None:
    value = getattr(socket, name, None)
    if value is None and PLATFORM == "linux":
        value = _LINUX_NUMBERS.get(name)
    if value is None and PLATFORM == "windows":
        value = _WINDOWS_NUMBERS.get(name)
    if value is None and PLATFORM == "darwin":
        value = _DARWIN_NUMBERS.get(name)
    return value


def _socket_numbers() -> dict[Option, tuple[int, int] | None]:
    numbers: dict[Option, tuple[int, int] | None] = {
        Option.KEEPALIVE: (socket.SOL_SOCKET, socket.SO_KEEPALIVE)
    }
    for option in (Option.IDLE, Option.INTERVAL, Option.COUNT, Option.USER_TIMEOUT):
        number = _number(_SYSTEM_NAMES[option])
        supported = option is not Option.USER_TIMEOUT or PLATFORM == "linux"
        numbers[option] = (socket.IPPROTO_TCP, number) if number is not None and supported else None
    return numbers


SOCKET_NUMBERS = _socket_numbers()

Spec = tuple[int, int, int, int, int]


def spec_steps(spec: Spec) -> list[tuple[Option, int]]:
    """The (option, value) calls a policy spec makes, in _platform.h's order.

    ``spec`` is ``KeepAlive._spec``: (enable, idle s, interval s, count, user timeout ms), -1 for
    a value left unchanged. A disabled policy sets no timing values; SO_KEEPALIVE comes last.
    """
    enable, idle, interval, count, user_timeout_ms = spec
    steps: list[tuple[Option, int]] = []
    if enable:
        steps += [
            (o, v)
            for o, v in ((Option.IDLE, idle), (Option.INTERVAL, interval), (Option.COUNT, count))
            if v >= 0
        ]
    if user_timeout_ms >= 0:
        steps.append((Option.USER_TIMEOUT, user_timeout_ms))
    steps.append((Option.KEEPALIVE, 1 if enable else 0))
    return steps
