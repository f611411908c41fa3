"""Socket objects over descriptors ka does not own, that can neither close nor change them.

The pure-Python twin and ``ka.server`` need a ``socket`` object to call setsockopt/getsockopt on
a bare descriptor. ``socket.socket(fileno=fd)`` is unsafe for that: its finaliser closes ``fd``
if anything is raised before ``detach()``, and under ``socket.setdefaulttimeout`` it makes ``fd``
non-blocking. ``borrowed_call`` does neither.
"""

from __future__ import annotations

import _socket
import os
import socket
import sys
from collections.abc import Callable
from typing import TypeVar


class _Borrowed(_socket.socket):
    """A socket object over a descriptor the caller owns: its finaliser never closes it."""

    __slots__ = ()

    # Replaces the finaliser that would close the fd (on CPython) with a C no-op: no Python
    # frame runs, so no signal handler can raise in it either.
    __del__ = staticmethod(tuple)


# SOCK_NONBLOCK in the type tells the socket object "timeout 0" without the fcntl that
# socket.setdefaulttimeout() would otherwise make on the caller's descriptor.
_BORROW_TYPE = socket.SOCK_STREAM | getattr(socket, "SOCK_NONBLOCK", 0)
_RESTORE_BLOCKING = (
    not hasattr(socket, "SOCK_NONBLOCK") and hasattr(os, "get_blocking") and sys.platform != "win32"
)

_T = TypeVar("_T")


def borrowed_call(fd: int, call: Callable[[_socket.socket], _T]) -> _T:
    """``call(sock)`` with a socket object over ``fd``, which stays open and unchanged.

    Raises OSError where the socket constructor refuses ``fd`` (not a socket, not open). The object
    has no descriptor until ``__init__`` gives it one inside ``try``, and ``finally`` detaches it,
    so no exception at any point (a signal handler raising, KeyboardInterrupt) can close ``fd``;
    ``_Borrowed`` also never closes in its finaliser. Where SOCK_NONBLOCK is missing (macOS) and
    ``socket.setdefaulttimeout`` is set, Python makes the descriptor non-blocking: the previous
    mode is put back before returning. On Windows it cannot be read back: see docs/HAZARDS.md.
    """
    sock = _Borrowed.__new__(_Borrowed)  # descriptor -1: nothing to close yet
    blocking = os.get_blocking(fd) if _RESTORE_BLOCKING and socket.getdefaulttimeout() is not None else None
    try:
        _socket.socket.__init__(sock, socket.AF_INET, _BORROW_TYPE, 0, fd)
        return call(sock)
    finally:
        sock.detach()
        if blocking is not None and os.get_blocking(fd) != blocking:
            os.set_blocking(fd, blocking)
