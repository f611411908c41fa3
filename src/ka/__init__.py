"""ka: TCP keepalive for one socket or a whole pool.

import ka
policy = ka.KeepAlive(idle=60, interval=10, count=5)   # seconds, seconds, probes
ka.apply(sock, policy)                                  # a socket, an fd, or anything with fileno()
result = ka.apply_many(pool, policy)                    # every input applied or listed in result.failed
ka.read(sock)                                           # the values the kernel reports
"""

from __future__ import annotations

import functools
import os
import socket
from typing import Any, NamedTuple

from ._impl import IMPLEMENTATION
from ._impl import core as core  # the active implementation; the tests switch it
from ._options import LIMITS, PLATFORM, USER_TIMEOUT_SEMANTICS, Option
from .errors import BulkError
from .integrations import socket_options
from .policy import KeepAlive, require_policy, resolve_policy
from .results import BulkResult, Failure, KeepAliveSettings, ReadResult
from .system import SystemDefaults, system_defaults

__version__ = "0.1.0"

__all__ = [
    "IMPLEMENTATION",
    "BulkError",
    "BulkResult",
    "Capabilities",
    "Failure",
    "KeepAlive",
    "KeepAliveSettings",
    "Option",
    "ReadResult",
    "SystemDefaults",
    "apply",
    "apply_many",
    "capabilities",
    "read",
    "read_many",
    "resolve_policy",
    "socket_options",
    "system_defaults",
]

MAX_THREADS = 64
# Each thread gets at least this many sockets, so 2 threads start at 512. Re-measured with the
# persistent workers (`ka bench`, 2 cores, idle): 2 threads 0.94-0.99x of 1 thread at 64-256
# sockets (a woken worker joins 25-45 us in, but 1 wake in 10 of a long-idle core takes ~3 ms in
# this VM), 1.71x at 512, 1.90x at 1024.
SOCKETS_PER_THREAD = 256


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_CPUS = _cpu_count()


def _threads_for(threads: int | None, n: int) -> int:
    if threads is None:
        return max(1, min(_CPUS, n // SOCKETS_PER_THREAD, MAX_THREADS))
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise TypeError(f"threads must be an int or None, not {type(threads).__name__} {threads!r}")
    if not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"threads={threads!r} is out of range: it takes 1 to {MAX_THREADS}, or None")
    return threads


def _size_hint(targets: Any) -> int:
    try:
        return len(targets)
    except TypeError:
        return 0


# ka.apply and ka.read are the core's own functions: no Python frame between a caller and the
# compiled code (the tests' `impl` fixture swaps them together with `core`).
apply = core.apply
read = core.read

BACKENDS = ("auto", "io_uring", "syscalls")
# What backend="auto" uses. io_uring's socket commands measured 0.56-0.75x the speed of the
# system-call loop on Linux 6.18 (docs/performance/internals.md), so the loop stays the default.
AUTO_BACKEND = "syscalls"


def _backend_note(uring_errno: int, uring_note: str) -> str:
    if uring_errno:
        return f"io_uring cannot be used: {uring_note}"
    return f"{uring_note}; backend='io_uring' uses it, 'auto' keeps the faster system-call loop"


def _backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(map(repr, BACKENDS))}")
    if backend == "io_uring":
        err, why = core.uring_status()
        if err:
            raise OSError(err, f"backend='io_uring' cannot be used here: {why}")
    return backend


def apply_many(
    targets: Any, policy: KeepAlive, *, threads: int | None = None, backend: str = "auto"
) -> BulkResult:
    """Apply ``policy`` to every target; no failure stops the batch.

    ``targets``: a sequence or iterable of sockets, fds or objects with ``fileno()``, or an integer
    array (``array('i')``, ``array('q')``, numpy int32/int64), the fastest path. Bad entries (wrong
    type, impossible fd number) raise ``TypeError``/``ValueError`` before any system call.
    The system calls run without the GIL, split over ``threads`` OS threads (``None``: one per
    256 sockets (two from 512 on), at most one per CPU). Returns a ``BulkResult``: each input applied or in
    ``result.failed`` with its errno and option; ``result.raise_for_failures()`` raises a BulkError.

    ``backend``: ``"auto"`` (what ``capabilities().bulk_backend`` names: the system-call loop,
    measured faster), ``"syscalls"``, or ``"io_uring"`` to send every socket's options in batched
    io_uring submissions (Linux 6.7+; an ``OSError`` naming why, raised before any setsockopt,
    where it cannot be used). Results are the same either way, errno and option included.
    """
    require_policy(policy)
    nthreads = _threads_for(threads, _size_hint(targets))
    fds, errnos, options, failed = core.apply_many(targets, policy, nthreads, _backend(backend))
    return BulkResult(fds, errnos, options, failed)


def read_many(targets: Any, *, threads: int | None = None) -> ReadResult:
    """Read every target's values into columns (arrays), one per field; no failure stops the batch.

    Takes the same targets as ``apply_many``. See ``ReadResult``.
    """
    nthreads = _threads_for(threads, _size_hint(targets))
    return ReadResult(*core.read_many(targets, nthreads))


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


@functools.lru_cache(maxsize=1)
def _windows_knobs() -> tuple[bool, bool, bool, bool]:
    """Which of TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_MAXRTMS/TCP_MAXRT this Windows
    build has (10 1709, 1709, 1703; Wine has none): read back from a fresh socket, where a
    missing option reads as None."""
    with socket.socket() as probe:
        settings = core.read(probe)
    return tuple(value is not None for value in settings[1:5])  # type: ignore[return-value]


def capabilities() -> Capabilities:
    """Which knobs this OS and build support, their ranges, and how listeners behave.

    ``listener_inherits``: accepted sockets get the listener's keepalive options (Linux, BSD;
    macOS copies SO_KEEPALIVE, interval and count but not the idle, so it counts as no).
    ``listener_safe``: ka may set keepalive on a listening socket (False on macOS, where ka
    leaves the listener alone and applies the policy per accepted socket).
    ``user_timeout_semantics``: what ``user_timeout`` maps to here ("" where unsupported):
    Linux TCP_USER_TIMEOUT also bounds keepalive probing; macOS TCP_RXT_CONNDROPTIME and Windows
    TCP_MAXRTMS/TCP_MAXRT bound retransmission of unacknowledged data only.
    On Windows ``count`` is what this machine does (TCP_KEEPCNT since 10 1703); idle and interval
    are always settable (through SIO_KEEPALIVE_VALS before 10 1709, idle required there).
    ``bulk_backend``: what ``apply_many(..., backend="auto")`` uses here (``"syscalls"``: one
    system call per option); ``bulk_backend_note`` says whether ``backend="io_uring"`` (Linux
    6.7+ socket commands, one submission for many sockets) can be used, and if not why (for
    example ``kernel.io_uring_disabled``, or a seccomp filter refusing io_uring_setup).
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
        listener_inherits=PLATFORM in ("linux", "freebsd"),
        listener_safe=PLATFORM not in ("darwin",),
        user_timeout_semantics=USER_TIMEOUT_SEMANTICS.get(PLATFORM, "") if user_timeout else "",
        bulk_backend=AUTO_BACKEND,
        bulk_backend_note=_backend_note(uring_errno, uring_note),
    )
