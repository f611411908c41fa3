"""The benchmark harness: methods timed interleaved on the same pool of live connections."""

from __future__ import annotations

import argparse
import array
import functools
import socket
import statistics
import time
from collections.abc import Callable

import ka

from .pool import LoopbackPool

_TCP = socket.IPPROTO_TCP
_OPTS = (
    (_TCP, getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", 0x10))),
    (_TCP, socket.TCP_KEEPINTVL),
    (_TCP, socket.TCP_KEEPCNT),
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
)


def stdlib_loop(sockets: list[socket.socket], values: tuple[int, int, int]) -> None:
    idle, interval, count = values
    (l1, o1), (l2, o2), (l3, o3), (l4, o4) = _OPTS
    for s in sockets:
        s.setsockopt(l1, o1, idle)
        s.setsockopt(l2, o2, interval)
        s.setsockopt(l3, o3, count)
        s.setsockopt(l4, o4, 1)


def ka_bulk(fds: array.array[int], values: tuple[int, int, int]) -> None:
    ka.apply_many(fds, ka.KeepAlive(*values), threads=1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="4000", help="comma-separated pool sizes (default 4000)")
    parser.add_argument("--repeats", type=int, default=15, help="rounds per method (default 15)")


def run_cli(args: argparse.Namespace) -> int:
    sizes = [int(x) for x in args.sizes.split(",")]
    for n in sizes:
        with LoopbackPool(n) as pool:
            socks = pool.sockets
            fds = pool.fds()
            values = [(60 + (r % 7), 10, 5) for r in range(args.repeats)]
            methods: dict[str, Callable[[tuple[int, int, int]], object]] = {
                "stdlib setsockopt loop": functools.partial(stdlib_loop, socks),
                "ka.apply_many(int array)": functools.partial(ka_bulk, fds),
            }
            times: dict[str, list[float]] = {m: [] for m in methods}
            for v in values:
                for name, fn in methods.items():
                    t0 = time.perf_counter_ns()
                    fn(v)
                    times[name].append((time.perf_counter_ns() - t0) / n)
            base = statistics.median(times["stdlib setsockopt loop"])
            print(f"pool of {n} connections:")
            for name, ts in times.items():
                med = statistics.median(ts)
                print(f"  {name:30s} {med:8.0f} ns/socket  {base / med:5.2f}x faster than stdlib")
    return 0
