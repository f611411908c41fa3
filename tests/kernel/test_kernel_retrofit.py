"""The retrofit drop on a real macOS or FreeBSD kernel: a loopback connection kept quiet for longer
than interval x count, then given a policy. ``ka.apply`` gets it dropped ``idle`` later without a
probe (the kernel's rule, which tests/adapters/test_retrofit_model.py models); ``ka.retrofit``
keeps it alive past idle + a margin.

Runs where ka bridges (macOS and the BSDs with keepalive times: the wheel workflow's macOS runners
and its FreeBSD job); elsewhere it skips: Linux counts unanswered probes, so one step is safe.
About 10 s: small values, seconds.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

import ka
from helpers import loopback_pair
from ka.bridge import Route, bridge_for

BRIDGE = bridge_for()
# The wheel workflow sets this where the test must run (its macOS and FreeBSD steps): a skip there
# would hide that the kernel was never asked.
REQUIRED = bool(os.environ.get("KA_REQUIRE_KERNEL_RETROFIT"))
pytestmark = pytest.mark.skipif(
    BRIDGE is None and not REQUIRED,
    reason="one step is safe on this OS (Linux and Windows count unanswered probes; OpenBSD has no "
    "per-socket idle): the drop ka.retrofit bridges over happens on macOS and the BSDs only",
)

POLICY = ka.KeepAlive(idle=2, interval=1, count=2)  # interval x count = 2 s: retrofit's minimum
QUIET = 3.0  # seconds without a segment before the policy lands: more than interval x count
MARGIN = 2.0  # seconds past idle: the kernel's first expiry, 500 ms late at worst on xnu


def test_this_os_bridges() -> None:
    assert BRIDGE is not None, "KA_REQUIRE_KERNEL_RETROFIT is set, but ka.retrofit bridges nothing on this OS"


def is_dropped(sock: socket.socket) -> bool:
    """True once the kernel dropped the connection (ETIMEDOUT or a reset waiting in SO_ERROR, or a
    read that fails); a live, quiet one has nothing to read."""
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) in (errno.ETIMEDOUT, errno.ECONNRESET):
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def still_talks(a: socket.socket, b: socket.socket) -> bool:
    a.sendall(b"ping")
    b.settimeout(5)
    return b.recv(4) == b"ping"


@pytest.fixture
def quiet_pairs() -> Iterator[
    tuple[tuple[socket.socket, socket.socket], tuple[socket.socket, socket.socket]]
]:
    """Two loopback connections that have carried nothing for QUIET seconds."""
    with ExitStack() as stack:
        one = stack.enter_context(loopback_pair())
        two = stack.enter_context(loopback_pair())
        time.sleep(QUIET)
        yield one, two


def test_retrofit_keeps_a_quiet_connection_that_apply_drops(
    quiet_pairs: tuple[tuple[socket.socket, socket.socket], tuple[socket.socket, socket.socket]],
) -> None:
    (applied, applied_peer), (bridged, bridged_peer) = quiet_pairs
    assert BRIDGE is not None and POLICY.interval is not None and POLICY.count is not None
    assert POLICY.interval * POLICY.count < QUIET
    ka.apply(applied, POLICY)  # one step: the timer restarts, the clock does not
    result = ka.retrofit([bridged], POLICY)
    assert result.ok and list(result.routes) == [Route.BRIDGED], result.failed
    assert POLICY.idle is not None
    time.sleep(POLICY.idle + MARGIN)
    # The kernel's rule, as the model has it: dropped at the first expiry, without a probe.
    assert is_dropped(applied), "ka.apply on a quiet connection was not dropped: the model is wrong here"
    assert (
        not is_dropped(bridged) and still_talks(bridged, bridged_peer) and still_talks(bridged_peer, bridged)
    )
    settings = ka.read(bridged)
    assert (settings.idle, settings.interval, settings.count) == (POLICY.idle, POLICY.interval, POLICY.count)
    del applied_peer
