"""What a type checker must accept and refuse in ka's calls (issue 23: the targets were ``Any``,
so ``ka.apply("not a socket", policy)`` type-checked).

Checked by mypy in ``nox -s lint``, never run (pytest collects only ``test_*.py``). Each call a
checker must refuse carries ``# type: ignore[code]``: mypy --strict reports an ignore that is not
needed, so a call that type-checks again fails the lint session.
"""

from __future__ import annotations

import array
import asyncio
import socket

import ka


def accepted(sock: socket.socket, transport: asyncio.Transport, policy: ka.KeepAlive) -> None:
    ka.apply(sock, policy)
    ka.apply(sock.fileno(), policy)
    ka.apply(transport.get_extra_info("socket"), policy)  # Any: the checker cannot tell
    ka.read(sock)
    ka.apply_many([sock, sock.fileno()], policy)
    ka.apply_many((s for s in [sock]), policy, threads=2)
    ka.apply_many(array.array("i", [sock.fileno()]), policy, backend="io_uring")
    ka.apply_many(memoryview(array.array("q", [3])), policy, backend="syscalls")
    ka.read_many([sock])


def refused(sock: socket.socket, policy: ka.KeepAlive) -> None:
    ka.apply("not a socket", policy)  # type: ignore[arg-type]
    ka.apply(3.0, policy)  # type: ignore[arg-type]
    ka.apply(sock, "idle=60")  # type: ignore[arg-type]
    ka.read(None)  # type: ignore[arg-type]
    ka.apply_many("not sockets", policy)  # type: ignore[arg-type]
    ka.apply_many(sock, policy)  # type: ignore[arg-type]
    ka.apply_many([sock, "x"], policy)  # type: ignore[list-item]
    ka.apply_many([sock], policy, backend="uring")  # type: ignore[arg-type]
    ka.read_many(["x"])  # type: ignore[list-item]
