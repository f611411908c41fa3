"""Nothing is lost in bulk: property tests over pools that mix every kind of descriptor.

Hypothesis draws pools of live TCP sockets, closed and negative fds, a regular file, a pipe, UDP
and Unix sockets, as objects or raw fds, in any order, in a list or an array('i'), with any thread
count and policy. For both implementations: every input is accounted for exactly once, each bad
one is reported with the errno and option the kernel gives, and the live ones read back right
(by getsockopt, independent of ka).
"""

from __future__ import annotations

import array
import errno
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ka
from helpers import (
    TCP_KEEPCNT,
    TCP_KEEPIDLE,
    TCP_KEEPINTVL,
    TCP_USER_TIMEOUT,
    core_apply_many,
    core_read_many,
    kernel_values,
)
from ka.bench.pool import LoopbackPool

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="errnos are Linux's")

BASE = (1, 13, 12, 11, 14000)  # every live socket is reset to this before each example
POLICIES = [
    ka.KeepAlive(idle=41, interval=9, count=6, user_timeout="auto"),
    ka.KeepAlive(idle=7, interval=3, count=2),
    ka.KeepAlive(idle=20),  # interval, count, user timeout left as they are
    ka.KeepAlive(count=5, user_timeout=0),
    ka.KeepAlive(),  # SO_KEEPALIVE only: succeeds on UDP and Unix sockets too
    ka.KeepAlive(user_timeout=2.5),
    ka.KeepAlive.disabled(),
    ka.KeepAlive(enabled=False, user_timeout=1),
]
KINDS = ["live", "closed", "closed_socket", "negative", "file", "pipe", "udp", "unix"]
# A TCP option on a non-TCP socket: setsockopt on UDP gives ENOPROTOOPT; getsockopt on UDP (Linux
# 6.18) and both calls on AF_UNIX give EOPNOTSUPP; older kernels differ, so either is accepted there.
NOT_TCP_ERRNOS = {errno.EOPNOTSUPP, errno.ENOPROTOOPT}


@dataclass
class Materials:
    live: list[socket.socket]
    file: Any
    pipe: tuple[int, int]
    udp: socket.socket
    unix: socket.socket
    closed_socket: socket.socket


@pytest.fixture(scope="module")
def materials() -> Iterator[Materials]:
    with LoopbackPool(24) as pool, tempfile.TemporaryFile() as f:
        r, w = os.pipe()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ua, ub = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        dead = socket.socket()
        dead.close()
        try:
            yield Materials(pool.sockets, f, (r, w), udp, ua, dead)
        finally:
            for s in (udp, ua, ub):
                s.close()
            os.close(r)
            os.close(w)


def _steps(spec: tuple[int, int, int, int, int]) -> list[ka.Option]:
    """The options a spec sets, in the documented order."""
    enable, idle, interval, count, ut = spec
    steps = [ka.Option.KEEPALIVE]
    if enable:
        steps += [
            o
            for o, v in ((ka.Option.IDLE, idle), (ka.Option.INTERVAL, interval), (ka.Option.COUNT, count))
            if v >= 0
        ]
    if ut >= 0:
        steps.append(ka.Option.USER_TIMEOUT)
    return steps


def expected_apply(kind: str, spec: tuple[int, int, int, int, int]) -> tuple[set[int], ka.Option]:
    """(allowed errnos, failing option) for one input; ({0}, NONE) when it should be applied."""
    steps = _steps(spec)
    if kind in ("closed", "closed_socket", "negative"):
        return {errno.EBADF}, steps[0]
    if kind in ("file", "pipe"):
        return {errno.ENOTSOCK}, steps[0]
    tcp_level = [o for o in steps if o is not ka.Option.KEEPALIVE]
    if kind in ("udp", "unix") and tcp_level:
        return ({errno.ENOPROTOOPT} if kind == "udp" else NOT_TCP_ERRNOS), tcp_level[0]
    return {0}, ka.Option.NONE


def expected_read(kind: str) -> tuple[set[int], ka.Option]:
    if kind in ("closed", "closed_socket", "negative"):
        return {errno.EBADF}, ka.Option.KEEPALIVE
    if kind in ("file", "pipe"):
        return {errno.ENOTSOCK}, ka.Option.KEEPALIVE
    if kind in ("udp", "unix"):
        return NOT_TCP_ERRNOS, ka.Option.IDLE
    return {0}, ka.Option.NONE


def expected_values(spec: tuple[int, int, int, int, int]) -> tuple[int, int, int, int, int]:
    enable, idle, interval, count, ut = spec
    kept = [v if v >= 0 and enable else b for v, b in zip((idle, interval, count), BASE[1:4])]
    return (enable, kept[0], kept[1], kept[2], ut if ut >= 0 else BASE[4])


def reset(live: list[socket.socket]) -> None:
    for s in live:
        s.setsockopt(socket.IPPROTO_TCP, TCP_KEEPIDLE, BASE[1])
        s.setsockopt(socket.IPPROTO_TCP, TCP_KEEPINTVL, BASE[2])
        s.setsockopt(socket.IPPROTO_TCP, TCP_KEEPCNT, BASE[3])
        s.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, BASE[4])
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, BASE[0])


entries = st.lists(
    st.tuples(
        st.sampled_from(KINDS), st.integers(0, 23), st.booleans()
    ),  # kind, which live socket, as raw fd
    max_size=60,
)


def build(m: Materials, drawn: list[tuple[str, int, bool]]) -> tuple[list[Any], list[str], list[int]]:
    """Targets, their kinds and the fd ka should report for each. Closed fds are made last."""
    closed_fd = os.dup(m.pipe[0])
    os.close(closed_fd)  # nothing opens a descriptor between here and the bulk call
    targets: list[Any] = []
    fds: list[int] = []
    for kind, k, raw in drawn:
        obj: Any = {
            "live": m.live[k],
            "file": m.file,
            "pipe": m.pipe[k % 2],
            "udp": m.udp,
            "unix": m.unix,
            "closed_socket": m.closed_socket,
            "closed": closed_fd,
            "negative": -1 - k,
        }[kind]
        fd = obj if isinstance(obj, int) else obj.fileno()
        targets.append(fd if raw else obj)
        fds.append(fd)
    return targets, [kind for kind, _, _ in drawn], fds


@pytest.mark.parametrize("as_array", [False, True], ids=["list", "array"])
@settings(max_examples=40, deadline=None)
@given(
    drawn=entries, policy=st.sampled_from(POLICIES), threads=st.integers(1, 8), read_threads=st.integers(1, 8)
)
def test_every_input_accounted_for(
    core: ModuleType,
    materials: Materials,
    as_array: bool,
    drawn: list[tuple[str, int, bool]],
    policy: ka.KeepAlive,
    threads: int,
    read_threads: int,
) -> None:
    reset(materials.live)
    targets, kinds, fds = build(materials, drawn)
    given_targets: Any = array.array("i", fds) if as_array else targets
    result = core_apply_many(core, given_targets, policy, threads=threads)
    read = core_read_many(core, given_targets, threads=read_threads)
    n = len(targets)
    assert len(result) == n and len(read) == n
    assert list(result.fds) == fds and list(read.fds) == fds
    failed = [f.index for f in result.failed]
    assert sorted(failed + result.applied_indices) == list(range(n)), "an input lost or counted twice"
    assert len(set(failed)) == len(failed) == result.failed_count
    assert result.applied + result.failed_count == n
    spec = policy.spec
    for i, kind in enumerate(kinds):
        errnos, option = expected_apply(kind, spec)
        assert result.errnos[i] in errnos, (i, kind, errno.errorcode.get(result.errnos[i]))
        if result.errnos[i]:
            assert result.options[i] == option, (i, kind, ka.Option(result.options[i]))
        errnos, option = expected_read(kind)
        assert read.errnos[i] in errnos, (i, kind, errno.errorcode.get(read.errnos[i]))
        if read.errnos[i]:
            assert read.options[i] == option, (i, kind)
    want = expected_values(spec)
    for i, kind in enumerate(kinds):
        if kind == "live":
            sock = materials.live[drawn[i][1]]
            assert kernel_values(sock) == want, (i, policy)
            got = (read.enabled[i], read.idle[i], read.interval[i], read.count[i], read.user_timeout_ms[i])
            assert got == want
    untouched = set(range(24)) - {k for kind, k, _ in drawn if kind == "live"}
    for k in untouched:
        assert kernel_values(materials.live[k]) == BASE, "a socket not in the pool was changed"
