"""Running a function inside another process's network namespace (Linux).

A socket call, a netlink dump or a BPF iterator sees the network namespace of the thread that
makes it. ``run_in_netns(path, fn)`` calls ``fn`` in a short-lived thread that first enters the
namespace at ``path`` with ``setns(2)`` (CAP_SYS_ADMIN), so the caller's own threads stay where
they are; ``run_in_netns_of(pid, fn)`` does it for process ``pid``'s namespace, and calls ``fn``
directly, without privileges, when that is the caller's own.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Callable, TypeVar

from .procfs import proc_dir

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def netns_id(pid: int | None = None) -> int:
    """The inode of process ``pid``'s network namespace (None: this process's), as
    ``net:[INODE]`` names it; ``ProcessLookupError`` when the process is gone."""
    try:
        return os.stat(proc_dir(pid) / "ns" / "net").st_ino
    except FileNotFoundError:
        raise ProcessLookupError(3, f"no process with pid {pid}") from None


def enter(fd: int) -> None:
    """Move this thread into the network namespace open at ``fd`` (setns(2), CAP_SYS_ADMIN)."""
    setns = getattr(os, "setns", None)  # Python 3.12+
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into a network namespace: {os.strerror(err)}")


def run_in_netns(path: str | os.PathLike[str], fn: Callable[[], T]) -> T:
    """``fn()`` in a new thread inside the network namespace at ``path`` (``/proc/PID/ns/net``,
    ``/run/netns/NAME``); its result, or what it raised. ``PermissionError`` when the namespace
    cannot be entered (CAP_SYS_ADMIN is needed)."""
    results: list[T] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                enter(fd)
            finally:
                os.close(fd)
            results.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body, name=f"netns {path}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def run_in_netns_of(pid: int, fn: Callable[[], T]) -> T:
    """``fn()`` inside process ``pid``'s network namespace: directly when it is this process's,
    else as ``run_in_netns`` does."""
    if netns_id(pid) == netns_id(None):
        return fn()
    return run_in_netns(proc_dir(pid) / "ns" / "net", fn)
