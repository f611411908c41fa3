"""pidfd_open and pidfd_getfd (Linux 5.6+): another process's descriptors, duplicated into this one.

A duplicate shares the socket, so reading or setting an option on it reads or sets the target's.
Both calls need ptrace permission over the process (same user and, where Yama is on,
``kernel.yama.ptrace_scope`` <= 1; or CAP_SYS_PTRACE); a process whose permitted capabilities
exceed the caller's needs CAP_SYS_PTRACE too.
"""

from __future__ import annotations

import array
import ctypes
import errno
import os
import platform
import select as _select
from collections.abc import Iterator, Sequence
from typing import Any, final

from .._options import PLATFORM
from .._signals import signals_deferred
from ..system import descriptor_use
from .cgroup import socket_tags
from .filters import check_pid
from .model import Connection, NotPermitted, WouldRetag
from .procfs import permission_message

# pidfd_getfd is 438 in the generic syscall table every architecture has used since 5.1, except
# alpha and MIPS (offset tables), which ka does not guess.
SYS_PIDFD_OPEN = 434
SYS_PIDFD_GETFD = 438
_ODD_SYSCALL_TABLES = ("alpha", "mips")

# Descriptors this process keeps free for everything else while holding duplicates.
_FD_HEADROOM = 64
MAX_CHUNK = 4096


def check_platform() -> None:
    """NotImplementedError unless this system can reach another process's descriptors (Linux,
    on an architecture whose pidfd syscall numbers ka knows)."""
    if PLATFORM != "linux":
        raise NotImplementedError(
            "reaching another process's connections needs Linux (pidfd_getfd); this is "
            f"{platform.system() or 'an unknown system'}"
        )
    machine = platform.machine().lower()
    if machine.startswith(_ODD_SYSCALL_TABLES):
        raise NotImplementedError(f"pidfd_getfd's syscall number on {machine} is not known to ka")


_syscall_function: Any = None


def _syscall() -> Any:
    """libc's ``syscall``, returning a C long. Python ints go as C ints, which libffi widens to
    the registers' width: a third of the cost of wrapping each in a ctypes object."""
    global _syscall_function
    if _syscall_function is None:
        function = ctypes.CDLL(None, use_errno=True).syscall
        function.restype = ctypes.c_long
        _syscall_function = function
    return _syscall_function


def pidfd_open(pid: int) -> int:
    """A pidfd for ``pid`` (no permission needed). ProcessLookupError when it does not exist."""
    check_platform()
    try:
        if hasattr(os, "pidfd_open"):
            return os.pidfd_open(pid)
        fd: int = _syscall()(SYS_PIDFD_OPEN, pid, 0)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return fd
    except ProcessLookupError:
        raise ProcessLookupError(errno.ESRCH, f"there is no process {pid}") from None
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            raise NotImplementedError("pidfd_open needs Linux 5.3 or later") from None
        raise


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    """Duplicate descriptor ``target_fd`` of the pidfd's process into this one (close-on-exec).

    Raises OSError: EPERM without ptrace permission, EBADF when the process has no such
    descriptor, ESRCH when it has exited; NotImplementedError before Linux 5.6.
    """
    fd: int = (_syscall_function or _syscall())(SYS_PIDFD_GETFD, pidfd, target_fd, 0)
    if fd >= 0:
        return fd
    err = ctypes.get_errno()
    if err == errno.ENOSYS:
        raise NotImplementedError("pidfd_getfd needs Linux 5.6 or later")
    raise OSError(err, f"{os.strerror(err)} (pidfd_getfd of descriptor {target_fd})")


def _has_exited(pidfd: int) -> bool:
    """True once the pidfd's process has exited (a pidfd polls readable then, zombie or reaped)."""
    poller = _select.poll()
    poller.register(pidfd, _select.POLLIN)
    return bool(poller.poll(0))


def chunk_size() -> int:
    """How many duplicates this process may hold at once: what its descriptor limit leaves free,
    at most ``MAX_CHUNK``."""
    use = descriptor_use()
    if use is None:  # no limit (or none readable): the chunk's own bound
        return MAX_CHUNK
    soft, in_use = use
    return max(1, min(MAX_CHUNK, soft - in_use - _FD_HEADROOM))


def check_socket_tags(pid: int) -> None:
    """``WouldRetag`` unless duplicating ``pid``'s sockets leaves what their cgroup v1 tags mean.

    The kernel gives a socket received by pidfd_getfd (as by SCM_RIGHTS) the receiving task's
    ``net_cls`` classid and ``net_prio`` index (``__receive_sock`` in net/core/sock.c, kernel
    commit 4969f8a07397): the target's traffic class and priorities would become ka's. Where
    both cgroups give the same classid and the same priority on every interface (always so where
    the v1 controllers are not mounted, as on cgroup v2 hosts), the traffic is tagged as before.
    """
    mine, theirs = socket_tags(), socket_tags(pid)
    differ = [c for c in mine if mine[c] != theirs[c]]
    if differ:
        shown = {c: " ".join(theirs[c].split()) or "none" for c in differ}
        names = " and ".join(
            f"{c} {shown[c]!r} (ka's: {' '.join(mine[c].split()) or 'none'!r})" for c in differ
        )
        raise WouldRetag(
            f"process {pid}'s sockets carry cgroup v1 tags ka's do not, {names}: reading or "
            "setting them through pidfd_getfd would re-tag them with ka's; run ka in the same "
            "net_cls/net_prio cgroups (cgexec -g net_cls,net_prio:PATH ka ...) to reach it"
        )


@final
class Duplicates:
    """This process's duplicates of some of another process's socket descriptors.

    ``fds[i]`` is the duplicate of ``conns[i]``, or -1 where the socket is gone (the descriptor
    was closed, or now names another socket); ``gone[i]`` then says why. Close with ``close()``
    or use as a context manager. SIGINT/SIGTERM are held while duplicates are made and closed
    (main thread), so an interrupt never leaks one.
    """

    def __init__(self, pidfd: int, pid: int, conns: Sequence[Connection]) -> None:
        self.pid = pid
        self.conns: list[Connection] = list(conns)
        self.fds: array.array[int] = array.array("i", [-1] * len(self.conns))
        self.gone: list[str | None] = [None] * len(self.conns)
        try:
            # A signal between a dup and its store would leak the dup: held until all are made.
            with signals_deferred():
                self._duplicate(pidfd)
        except BaseException:
            self.close()
            raise

    def _duplicate(self, pidfd: int) -> None:
        # One loop, names bound once: this runs once per connection of an audit.
        getfd, fstat, fds, gone = pidfd_getfd, os.fstat, self.fds, self.gone
        for i, conn in enumerate(self.conns):
            try:
                fd = getfd(pidfd, conn.fd)
            except OSError as exc:
                gone[i] = self._failed(pidfd, conn, exc)
                continue
            fds[i] = fd  # ours from here: close() releases it whatever is raised next
            if fstat(fd).st_ino != conn.inode:
                fds[i] = -1
                os.close(fd)  # the number was reused for another file since we listed it
                gone[i] = f"descriptor {conn.fd} now names another file"

    def _failed(self, pidfd: int, conn: Connection, exc: OSError) -> str:
        """Why ``conn``'s descriptor could not be duplicated, when it was closed; raises when the
        whole process is out of reach (no permission, exited)."""
        if exc.errno == errno.EBADF:
            if _has_exited(pidfd):  # a zombie has no descriptors left: every dup says EBADF
                raise ProcessLookupError(errno.ESRCH, f"process {self.pid} has exited") from None
            return f"descriptor {conn.fd} was closed"
        if exc.errno == errno.EPERM:
            raise NotPermitted(errno.EPERM, permission_message(self.pid)) from None
        if exc.errno == errno.ESRCH:
            raise ProcessLookupError(errno.ESRCH, f"process {self.pid} has exited") from None
        raise exc

    def close(self) -> None:
        with signals_deferred():  # every duplicate is closed, Ctrl-C or not
            for i, fd in enumerate(self.fds):
                if fd >= 0:
                    self.fds[i] = -1
                    os.close(fd)

    def __enter__(self) -> Duplicates:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@final
class Process:
    """A pidfd on a running process, from which its descriptors are duplicated. Linux 5.6+."""

    def __init__(self, pid: int) -> None:
        self.pid: int = check_pid(pid)
        check_socket_tags(pid)
        self.pidfd: int = pidfd_open(pid)

    def duplicate(self, conns: Sequence[Connection]) -> Duplicates:
        """Duplicates of the connections' descriptors (see ``Duplicates``)."""
        return Duplicates(self.pidfd, self.pid, conns)

    def chunks(self, conns: Sequence[Connection]) -> Iterator[Duplicates]:
        """Duplicates of the connections, a chunk at a time; each chunk is closed when the next
        one is made (and at the end), so this process never holds more than it may open."""
        size = chunk_size()
        for start in range(0, len(conns), size):
            with self.duplicate(conns[start : start + size]) as dups:
                yield dups

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
