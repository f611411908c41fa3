"""The methods the benchmark times: ka, plain socket calls, the C floor and the twin, by name.

Each method takes the (idle, interval, count) of one call and does the whole pool's work.
"""

from __future__ import annotations

import array
import socket
from collections.abc import Callable
from typing import Any

import ka
from ka import _ka_py, _options
from ka._impl import core
from ka.targets import Backend

from .floor import Floor
from .pool import LoopbackPool

_TCP = socket.IPPROTO_TCP
# This OS's option numbers (ka's table): a hard-coded 18 is TCP_USER_TIMEOUT on Linux only.
_NUMBERS = {o: n for o, n in _options.HERE.numbers.items() if n is not None}
_IDLE = _NUMBERS.get(ka.Option.IDLE)
_INTVL = _NUMBERS.get(ka.Option.INTERVAL)
_CNT = _NUMBERS.get(ka.Option.COUNT)
# The knobs this OS has, in ka.read_many's order; the stdlib loops set and read exactly these.
READ_NUMBERS = [n for o, n in sorted(_NUMBERS.items())]
_SOL, _SO_KA = socket.SOL_SOCKET, socket.SO_KEEPALIVE

Values = tuple[int, int, int]
Method = Callable[[Values], object]

STDLIB_APPLY = "stdlib setsockopt loop"
STDLIB_READ = "stdlib getsockopt loop"
FLOOR = "C floor (plain C loop)"
BULK_ARRAY = "ka.apply_many(int array)"
BULK_LIST = "ka.apply_many(list of sockets)"
BULK_THREADS = "ka.apply_many(int array, threads={})"
BULK_URING = "ka.apply_many(int array, io_uring)"
BULK_URING_THREADS = "ka.apply_many(int array, io_uring, threads={})"
BULK_DEFAULT = "ka.apply_many(int array), default threads"
APPLY_LOOP = "ka.apply in a Python loop"
TWIN_APPLY = "pure-Python twin apply_many(int array)"
READ_ARRAY = "ka.read_many(int array)"
READ_LIST = "ka.read_many(list of sockets)"
READ_THREADS = "ka.read_many(int array, threads={})"
READ_DEFAULT = "ka.read_many(int array), default threads"
READ_LOOP = "ka.read in a Python loop"
TWIN_READ = "pure-Python twin read_many(int array)"


def stdlib_apply(sockets: list[socket.socket], values: Values) -> None:
    """What code without ka does: one setsockopt per option (four on Linux, macOS, Windows)."""
    calls = [
        (_TCP, number, value) for number, value in zip((_IDLE, _INTVL, _CNT), values) if number is not None
    ]
    for s in sockets:
        s.setsockopt(_SOL, _SO_KA, 1)
        for level, number, value in calls:
            s.setsockopt(level, number, value)


def stdlib_read(sockets: list[socket.socket]) -> list[tuple[int, ...]]:
    """The same reads as ka.read_many, one getsockopt each (the options this OS has)."""
    return [
        (s.getsockopt(_SOL, _SO_KA), *(s.getsockopt(_TCP, number) for number in READ_NUMBERS))
        for s in sockets
    ]


def _keepalive_socket() -> Any:
    try:
        import keepalive  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None
    return keepalive if hasattr(keepalive, "set") else None


def _thread_counts(threads: int) -> list[int]:
    """The threaded rows: 2 threads (the issue's targets) and the machine's count if it differs."""
    return sorted({2, threads})


def uring_usable() -> bool:
    return ka.capabilities().implementation == "c" and not core.uring_status()[0]


def apply_methods(
    pool: LoopbackPool, floor: Floor | None, threads: int, notes: list[str]
) -> dict[str, Method]:
    socks = pool.sockets
    fds = pool.fds()
    policy = ka.KeepAlive  # one policy per call, built outside the per-socket work
    methods: dict[str, Method] = {
        STDLIB_APPLY: lambda v: stdlib_apply(socks, v),
    }
    keepalive = _keepalive_socket()
    if keepalive is not None:
        methods["keepalive-socket (PyPI)"] = lambda v: [keepalive.set(s, *v) for s in socks]
    else:
        notes.append("keepalive-socket is not installed: skipped (pip install keepalive-socket)")

    def apply_loop(v: Values) -> None:
        p, apply = policy(*v), ka.apply
        for s in socks:
            apply(s, p)

    def bulk(t: int, backend: Backend) -> Method:
        return lambda v: ka.apply_many(fds, policy(*v), threads=t, backend=backend)

    methods[APPLY_LOOP] = apply_loop
    methods[BULK_LIST] = lambda v: ka.apply_many(socks, policy(*v), threads=1, backend="syscalls")
    methods[BULK_ARRAY] = bulk(1, "syscalls")
    for t in _thread_counts(threads):
        methods[BULK_THREADS.format(t)] = bulk(t, "syscalls")
    if uring_usable():
        methods[BULK_URING] = bulk(1, "io_uring")
        for t in _thread_counts(threads):
            methods[BULK_URING_THREADS.format(t)] = bulk(t, "io_uring")
    else:
        notes.append(f"io_uring rows skipped: {ka.capabilities().bulk_backend_note}")
    methods[BULK_DEFAULT] = lambda v: ka.apply_many(fds, policy(*v))
    if ka.IMPLEMENTATION == "c":
        methods[TWIN_APPLY] = lambda v: _ka_py.apply_many(fds, policy(*v), 1, "syscalls")
    if floor is not None:
        methods[FLOOR] = lambda v: floor.apply(fds, *v)
    return methods


def read_methods(pool: LoopbackPool, floor: Floor | None, threads: int) -> dict[str, Method]:
    socks = pool.sockets
    fds = pool.fds()
    out = array.array("i", bytes(4 * 5 * len(fds)))

    def read_loop(v: Values) -> None:
        read = ka.read
        for s in socks:
            read(s)

    def bulk(t: int) -> Method:
        return lambda v: ka.read_many(fds, threads=t)

    methods: dict[str, Method] = {
        STDLIB_READ: lambda v: stdlib_read(socks),
        READ_LOOP: read_loop,
        READ_LIST: lambda v: ka.read_many(socks, threads=1),
        READ_ARRAY: bulk(1),
    }
    for t in _thread_counts(threads):
        methods[READ_THREADS.format(t)] = bulk(t)
    methods[READ_DEFAULT] = lambda v: ka.read_many(fds)
    if ka.IMPLEMENTATION == "c":
        methods[TWIN_READ] = lambda v: _ka_py.read_many(fds, 1)
    if floor is not None:
        methods[FLOOR] = lambda v: floor.read(fds, out)
    return methods


def threaded_apply(fds: array.array[int], threads: int) -> Method:
    return lambda v: ka.apply_many(fds, ka.KeepAlive(*v), threads=threads)
