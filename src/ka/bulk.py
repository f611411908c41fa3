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
# What backend="auto" uses. io_uring's socket commands measured 0.56-0.75x the speed of the
# system-call loop on Linux 6.18 (docs/performance/internals.md), so the loop stays the default.
AUTO_BACKEND = "syscalls"


def backend_note(uring_errno: int, uring_note: str) -> str:
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

    On macOS and the BSDs, an established connection that received nothing for interval x count
    seconds is dropped ``idle`` seconds after the policy lands, without a probe: for a pool of
    existing connections use ``ka.retrofit``, which bridges them first (docs/HAZARDS.md).
    """
    require_policy(policy)
    nthreads = _threads_for(threads, _size_hint(targets))
    return BulkResult.from_columns(core.apply_many(targets, policy, nthreads, _backend(backend)))


def read_many(targets: Any, *, threads: int | None = None) -> ReadResult:
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
