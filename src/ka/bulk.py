"""The face's bulk calls: ``apply_many`` and ``read_many`` over the active core.

They choose the thread count and the backend, then hand the targets to the core in one call;
the core returns ``ka.protocol`` columns, turned here into ``BulkResult`` / ``ReadResult``.
"""

from __future__ import annotations

import os
from typing import Any

from ._impl import core
from .policy import KeepAlive, require_policy
from .results import BulkResult, ReadResult
from .targets import Backend, Targets

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


BACKENDS = ("auto", "io_uring", "syscalls")


def auto_backend(uring_errno: int) -> str:
    """What ``backend="auto"`` uses for a call of ``core.URING_AUTO_MIN`` sockets or more."""
    return "syscalls" if uring_errno else "io_uring"


def backend_note(uring_errno: int, uring_note: str) -> str:
    """Why ``backend="auto"`` uses what it uses here: ``capabilities().bulk_backend_note``."""
    if uring_errno:
        return f"backend='auto' uses the system-call loop: io_uring cannot be used: {uring_note}"
    return (
        f"backend='auto' sends the options of a call of {core.URING_AUTO_MIN} sockets or more through "
        "io_uring, 256 sockets per batch (measured faster than the system-call loop from about 16 "
        "sockets on, at every pool size up to 16,000: docs/performance/internals.md), and smaller "
        f"calls through the loop; the results are the same either way. {uring_note}"
    )


def _backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(map(repr, BACKENDS))}")
    if backend == "io_uring":
        err, why = core.uring_status()
        if err:
            raise OSError(err, f"backend='io_uring' cannot be used here: {why}")
    return backend


def apply_many(
    targets: Targets, policy: KeepAlive, *, threads: int | None = None, backend: Backend = "auto"
) -> BulkResult:
    """Apply ``policy`` to every target; no failure stops the batch.

    ``targets``: a sequence or iterable of sockets, fds or objects with ``fileno()``, or an integer
    array (``array('i')``, ``array('q')``, numpy int32/int64), the fastest path. Bad entries (wrong
    type, impossible fd number) raise ``TypeError``/``ValueError`` before any system call.
    The system calls run without the GIL, split over ``threads`` OS threads (``None``: one per
    256 sockets (two from 512 on), at most one per CPU). Returns a ``BulkResult``: each input applied or in
    ``result.failed`` with its errno and option; ``result.raise_for_failures()`` raises a BulkError.

    ``backend``: ``"auto"`` (io_uring for calls of 64 sockets or more where it can be used, Linux
    6.7+, measured faster there; the system calls otherwise: ``capabilities().bulk_backend`` and
    its note say which and why), ``"syscalls"`` (one system call per option), or ``"io_uring"``
    (every call through io_uring's batched submissions; an ``OSError`` naming why, raised before
    any setsockopt, where it cannot be used). Results are the same either way, errno and option
    included. io_uring holds no descriptor: ka's rings live in each thread's registered-ring
    table, so closing descriptors (while daemonizing) or forking never touches them.

    On macOS and the BSDs, an established connection that received nothing for interval x count
    seconds is dropped ``idle`` seconds after the policy lands, without a probe: for a pool of
    existing connections use ``ka.retrofit``, which bridges them first (docs/HAZARDS.md).
    """
    require_policy(policy)
    nthreads = _threads_for(threads, _size_hint(targets))
    return BulkResult.from_columns(core.apply_many(targets, policy, nthreads, _backend(backend)))


def release_workers() -> int:
    """Let ka's bulk worker threads go now, instead of about 2 seconds after the last call.

    ``apply_many``/``read_many`` with more than one thread keep their worker threads alive
    between calls (a woken worker starts in microseconds, a new thread in tens). Until they
    exit, the process has those extra threads: ``os.fork()`` on CPython 3.12+ warns that the
    process is multi-threaded ("use of fork() may lead to deadlocks in the child"; ka's own state
    is safe across fork, the warning is about the process as a whole), and a program near its
    thread limit (``RLIMIT_NPROC``, a container's pids limit) may fail to start a thread of its
    own ("can't start new thread"). Call this before either: every idle worker ends, and it
    returns once their threads have ended. Also frees the calling thread's io_uring ring, if it
    has one. Workers busy in another thread's concurrent call end when that call is done.

    Returns how many workers are still alive (0 unless calls ran concurrently). Workers start
    again on the next call that wants them. The pure-Python twin has none: it returns 0.
    """
    return core.release_workers()


def read_many(targets: Targets, *, threads: int | None = None) -> ReadResult:
    """Read every target's values into columns (arrays), one per field; no failure stops the batch.

    Takes the same targets as ``apply_many``. See ``ReadResult``.
    """
    nthreads = _threads_for(threads, _size_hint(targets))
    return ReadResult.from_columns(core.read_many(targets, nthreads))


def check_arguments(threads: int | None, backend: str) -> None:
    """Raise what ``apply_many`` raises for ``threads`` and ``backend``, before any socket call:
    for callers that make other calls first (``ka.retrofit`` reads TCP states)."""
    _threads_for(threads, 0)
    _backend(backend)
