"""Pools of established loopback TCP connections, with the far ends in a child process.

A process may hold only so many descriptors (20000 on some machines, with no way to raise it), so
the peer of every connection lives in a child: the caller's process holds one end of each.
"""

from __future__ import annotations

import array
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from types import TracebackType

if sys.platform != "win32":
    import resource

# The child: connect N times to the parent's listener, say how many, hold them until stdin closes.
_CHILD = r"""
import os, socket, sys
try:
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
except Exception:
    pass
host, port, n, family = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
held = []
try:
    for _ in range(n):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.connect((host, port))
        held.append(s)
except OSError as exc:
    sys.stdout.write(f"error {exc.errno} {exc.strerror} after {len(held)}\n")
    sys.stdout.flush()
    sys.exit(1)
sys.stdout.write(f"ok {len(held)}\n")
sys.stdout.flush()
sys.stdin.read()
"""


def somaxconn() -> int:
    """The kernel's cap on a listen backlog (4096 where it cannot be read)."""
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 4096


def raise_fd_limit() -> int:
    """Raise this process's descriptor limit to its hard limit; returns the new soft limit."""
    if sys.platform == "win32":  # no RLIMIT_NOFILE: the limit is memory
        return 1 << 30
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def stop_child(child: subprocess.Popen[str], timeout: float = 30) -> None:
    """End a child that runs until its stdin closes: close it, wait, kill if it hangs."""
    if child.stdin is not None:
        child.stdin.close()
    try:
        child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    if child.stdout is not None:
        child.stdout.close()


class LoopbackPool:
    """``n`` established TCP connections on loopback; ``sockets`` are this process's ends.

    The ends held here are the accepted (server) side. Use as a context manager, or call
    ``close()``: it closes every socket here and ends the child.

    For measuring a server's accept path: ``prepare_listener(listener)`` runs before anyone
    connects, ``on_accept(sock)`` after each accept, and with ``connect_first`` every connection is
    completed (waiting in the backlog, so ``n`` is capped by ``net.core.somaxconn``) before the
    accept loop starts; ``accept_ns`` is the accept loop's duration.
    """

    def __init__(
        self,
        n: int,
        host: str = "127.0.0.1",
        *,
        prepare_listener: Callable[[socket.socket], object] | None = None,
        on_accept: Callable[[socket.socket], object] | None = None,
        connect_first: bool = False,
    ) -> None:
        if n < 0:
            raise ValueError(f"a pool needs n >= 0 connections, not {n}")
        limit = raise_fd_limit()
        if n + 64 > limit:
            raise ValueError(
                f"a pool of {n} connections needs {n + 64} descriptors here; the limit is {limit}"
            )
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host = host
        self.sockets: list[socket.socket] = []
        self.accept_ns: int = 0
        self._child: subprocess.Popen[str] | None = None
        if connect_first and n > somaxconn():
            raise ValueError(f"connect_first holds all {n} connections in the backlog: at most {somaxconn()}")
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.bind((host, 0))
            if prepare_listener is not None:
                prepare_listener(listener)
            listener.listen(min(n, 4096) or 1)
            port = listener.getsockname()[1]
            self._child = subprocess.Popen(
                [sys.executable, "-c", _CHILD, host, str(port), str(n), str(int(family))],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            if connect_first:
                self._wait_for_child()
            listener.settimeout(30)
            accept = listener.accept
            sockets = self.sockets
            start = time.perf_counter_ns()
            for _ in range(n):
                conn, _ = accept()
                if on_accept is not None:
                    on_accept(conn)
                sockets.append(conn)
            self.accept_ns = time.perf_counter_ns() - start
            for conn in sockets:
                conn.settimeout(None)
            if not connect_first:
                self._wait_for_child()
        except BaseException:
            self.close()
            raise
        finally:
            listener.close()

    def _wait_for_child(self) -> None:
        assert self._child is not None and self._child.stdout is not None
        status = self._child.stdout.readline().split()
        if not status or status[0] != "ok":
            raise RuntimeError(f"the pool's child process failed: {' '.join(status) or 'no answer'}")

    def __len__(self) -> int:
        return len(self.sockets)

    def fds(self, typecode: str = "i") -> array.array[int]:
        """The descriptors of this process's ends, as an integer array."""
        return array.array(typecode, (s.fileno() for s in self.sockets))

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        self.sockets = []
        child, self._child = self._child, None
        if child is not None:
            stop_child(child)

    def __enter__(self) -> LoopbackPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_child", None) is not None or getattr(self, "sockets", None):
            self.close()


def pid_of_child(pool: LoopbackPool) -> int | None:
    """The pid of the process holding the far ends (for tools such as ``ss``)."""
    return pool._child.pid if pool._child is not None else None


__all__ = ["LoopbackPool", "pid_of_child", "raise_fd_limit", "somaxconn", "stop_child"]
