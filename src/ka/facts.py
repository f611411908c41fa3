"""What this platform and build support: ``ka.capabilities()``.

Read from the one table of platform facts (``_options``: limits, listener behaviour, user-timeout
semantics) and from the active core (which knobs the build has, whether io_uring can be used).
"""

from __future__ import annotations

import functools
import socket
from typing import Any, NamedTuple

from ._impl import IMPLEMENTATION, core
from ._options import (
    IPPROTO_TCP,
    LIMITS,
    LISTENERS,
    OS_CALLS,
    PLATFORM,
    USER_TIMEOUT_SEMANTICS,
    WSAEINVAL,
    WSAENOPROTOOPT,
    Option,
)
from .bulk import auto_backend, backend_note


class Capabilities(NamedTuple):
    """What this platform and build support. Limits: seconds, seconds, probes, milliseconds."""

    platform: str
    implementation: str
    idle: bool
    interval: bool
    count: bool  # type: ignore[assignment]  # shadows tuple.count, on purpose
    user_timeout: bool
    max_idle: int
    max_interval: int
    max_count: int
    max_user_timeout_ms: int
    listener_inherits: bool
    listener_safe: bool
    user_timeout_semantics: str
    bulk_backend: str
    bulk_backend_note: str


# Windows answers these where an option is missing (ka's shim: ka_is_missing_option).
_MISSING = (WSAENOPROTOOPT, WSAEINVAL)
_WINDOWS = OS_CALLS["windows"]


def _fresh_socket() -> Any:
    return socket.socket()


def windows_knobs(probe: Any) -> tuple[bool, bool, bool, bool]:
    """Which of TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT and TCP_MAXRTMS/TCP_MAXRT a Windows build
    takes (10 1709, 1709, 1703; Wine has none), asked as Go asks (internal/syscall/windows
    version_windows.go ``initTCPKeepAlive``): ``setsockopt(probe, IPPROTO_TCP, option, 1)`` on a
    fresh socket, an option counting as missing only where it answers WSAENOPROTOOPT (or
    WSAEINVAL, which ka's shim also treats as missing). Reading a fresh socket instead would need
    a value above 0 back, and TCP_MAXRT reads -1 ("retransmit forever") where it exists."""

    def takes(number: int | None) -> bool:
        if number is None:
            return False
        try:
            probe.setsockopt(IPPROTO_TCP, number, 1)
        except OSError as exc:  # CPython keeps the Winsock code in winerror, errno is mapped
            return (getattr(exc, "winerror", None) or exc.errno) not in _MISSING
        return True

    numbers = _WINDOWS.numbers
    idle, interval, count = (takes(numbers[o]) for o in (Option.IDLE, Option.INTERVAL, Option.COUNT))
    user_timeout = takes(numbers[Option.USER_TIMEOUT]) or takes(_WINDOWS.user_timeout_fallback)
    return idle, interval, count, user_timeout


@functools.lru_cache(maxsize=1)
def _windows_knobs() -> tuple[bool, bool, bool, bool]:
    """``windows_knobs`` of a fresh socket, asked once per process."""
    with _fresh_socket() as probe:
        return windows_knobs(probe)


def capabilities() -> Capabilities:
    """Which knobs this OS and build support, their ranges, and how listeners behave.

    ``listener_inherits``: accepted sockets get the listener's keepalive options (Linux, BSD;
    macOS copies SO_KEEPALIVE, interval and count but not the idle, so it counts as no).
    ``listener_safe``: ka may set keepalive on a listening socket (False on macOS, where ka
    leaves the listener alone and applies the policy per accepted socket).
    ``user_timeout_semantics``: what ``user_timeout`` maps to here ("" where unsupported):
    Linux TCP_USER_TIMEOUT also bounds keepalive probing; macOS TCP_RXT_CONNDROPTIME and Windows
    TCP_MAXRTMS/TCP_MAXRT bound retransmission of unacknowledged data only.
    On Windows ``count`` and ``user_timeout`` are what this machine does (TCP_KEEPCNT since 10
    1703), asked once as Go asks: setsockopt 1 on a fresh socket, missing only where that answers
    WSAENOPROTOOPT (or WSAEINVAL); idle and interval are always settable (through
    SIO_KEEPALIVE_VALS before 10 1709, idle required there).
    ``bulk_backend``: what ``apply_many(..., backend="auto")`` uses here for a call of 64 sockets
    or more: ``"io_uring"`` (Linux 6.7+ socket commands, a few submissions for many sockets,
    measured faster) where it can be used, else ``"syscalls"`` (one system call per option;
    smaller calls always). ``bulk_backend_note`` says why, and when io_uring cannot be used, what
    ruled it out (for example ``kernel.io_uring_disabled``, a seccomp filter refusing
    io_uring_setup, a kernel before 6.7) and whether ka will ask again (a passing cause such as a
    descriptor shortage is asked again on a later call, at most once a second).
    """
    have = core.HAVE
    if PLATFORM == "windows":
        knobs = _windows_knobs()
        have = (have[0], have[1], have[2] and knobs[2], have[3] and knobs[3])
    user_timeout = have[3] and LIMITS.max_user_timeout_ms > 0
    uring_errno, uring_note = core.uring_status()
    return Capabilities(
        platform=PLATFORM,
        implementation=IMPLEMENTATION,
        idle=have[0],
        interval=have[1],
        count=have[2],
        user_timeout=user_timeout,
        max_idle=LIMITS.max_idle,
        max_interval=LIMITS.max_interval,
        max_count=LIMITS.max_count,
        max_user_timeout_ms=LIMITS.max_user_timeout_ms,
        listener_inherits=LISTENERS.listener_inherits,
        listener_safe=LISTENERS.listener_safe,
        user_timeout_semantics=USER_TIMEOUT_SEMANTICS.get(PLATFORM, "") if user_timeout else "",
        bulk_backend=auto_backend(uring_errno),
        bulk_backend_note=backend_note(uring_errno, uring_note),
    )
