"""The types of what ka's calls take: one socket, many sockets, a bulk backend.

For type checkers, so a call with a wrong argument is flagged before it runs; at run time every
call checks its arguments anyway and raises a ``TypeError`` naming the bad value.

- ``Target``: one socket for ``ka.apply``/``ka.read``: an int file descriptor (a ``SOCKET``
  handle on Windows) or anything with a ``fileno()`` method returning one (``socket.socket``,
  asyncio's ``TransportSocket``, a file object, ...).
- ``Targets``: many, for ``ka.apply_many``/``ka.read_many``: an iterable of ``Target`` (a list,
  a tuple, a generator), or an integer buffer (``array('i')``, ``array('q')``, a numpy int32 or
  int64 array: the fast path, one copy of the numbers).
- ``Backend``: ``apply_many``'s ``backend=``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal, Protocol, Union

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
elif TYPE_CHECKING:
    from typing_extensions import Buffer  # the checkers' own copy: no run-time dependency
else:

    class Buffer(Protocol):
        """Any object with the buffer protocol (``collections.abc.Buffer`` from Python 3.12)."""


class SupportsFileno(Protocol):
    """An object with a ``fileno()`` method returning its descriptor number."""

    def fileno(self) -> int: ...


#: One socket (``ka.apply``, ``ka.read``): an int descriptor, or an object with ``fileno()``.
Target = Union[SupportsFileno, int]
#: Many sockets (``ka.apply_many``, ``ka.read_many``, ``ka.retrofit``): an iterable of ``Target``,
#: or an integer buffer such as ``array('i')`` or a numpy int32/int64 array (the fast path).
Targets = Union[Iterable[Target], Buffer]
#: ``apply_many``'s ``backend=``: ``"auto"`` (io_uring for calls of 64 sockets or more where it
#: can be used, else system calls), ``"io_uring"`` or ``"syscalls"``; ``ka.capabilities()``
#: says which ``auto`` uses here, and why.
Backend = Literal["auto", "io_uring", "syscalls"]

__all__ = ["Backend", "Buffer", "SupportsFileno", "Target", "Targets"]
