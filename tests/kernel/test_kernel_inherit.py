"""Linux: accepted sockets inherit the keepalive options ka set on their listener.

Checked by getsockopt on the accepted sockets, by ka.read / ka.read_many, and by the keepalive
timer ``ss -tno`` shows. Inheritance happens when the handshake completes, so a connection
already waiting in the accept queue when the listener was changed keeps the system defaults.
"""

from __future__ import annotations

import re
import shutil
import socket
import sys

import pytest

import ka
from helpers import kernel_values, ss_timers

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="listener inheritance is checked on Linux"
)

POLICY = ka.KeepAlive(idle=47, interval=6, count=4, user_timeout="auto")
EXPECTED = (1, 47, 6, 4, 71000)
_TIMER = re.compile(r"timer:\(keepalive,(?:(\d+)min)?(\d+(?:\.\d+)?)(ms|sec),(\d+)\)")


def _seconds_left(timer: str) -> float:
    """The time left on a ``timer:(keepalive,46sec,0)`` field, in seconds; fails on another timer."""
    match = _TIMER.fullmatch(timer)
    assert match, f"not a keepalive timer: {timer!r}"
    minutes, value, unit, probes = match.groups()
    assert probes == "0", "a probe was already sent"
    return int(minutes or 0) * 60 + float(value) / (1000 if unit == "ms" else 1)


def test_capabilities_say_linux_listeners_inherit() -> None:
    caps = ka.capabilities()
    assert caps.listener_inherits and caps.listener_safe


def test_accepted_sockets_inherit_the_listener_policy() -> None:
    if shutil.which("ss") is None:
        pytest.skip("the 'ss' command is missing (Debian package iproute2)")
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        ka.apply(listener, POLICY)
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        accepted = [listener.accept()[0] for _ in clients]
        try:
            for sock in accepted:
                assert kernel_values(sock) == EXPECTED
                assert ka.read(sock) == ka.KeepAliveSettings(True, 47, 6, 4, 71.0)
            read = ka.read_many(accepted)
            assert read.ok and read.mismatches(POLICY) == []
            # Only the accepted ends carry it: the clients were never touched.
            d = ka.system_defaults()
            for client in clients:
                assert kernel_values(client) == (0, d.idle, d.interval, d.count, 0)
            timers = ss_timers(port)
            assert set(timers) == {c.getsockname() for c in clients}
            for peer, timer in timers.items():
                left = _seconds_left(timer)
                assert 0 < left <= POLICY.idle, (peer, timer)  # type: ignore[operator]
        finally:
            for s in clients + accepted:
                s.close()


def test_apply_many_on_listeners() -> None:
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(4)]
    try:
        result = ka.apply_many(listeners, POLICY)
        assert result.ok and result.applied == 4
        for listener in listeners:
            with socket.create_connection(listener.getsockname()) as client:
                accepted, _ = listener.accept()
                with accepted:
                    assert kernel_values(accepted) == EXPECTED
                    assert kernel_values(client)[0] == 0
    finally:
        for listener in listeners:
            listener.close()


def test_connection_queued_before_the_change_keeps_the_defaults() -> None:
    """The hazard in docs/HAZARDS.md: set the listener before connections can arrive."""
    d = ka.system_defaults()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        early = socket.create_connection(listener.getsockname())
        ka.apply(listener, POLICY)
        late = socket.create_connection(listener.getsockname())
        with early, late:
            first, _ = listener.accept()
            second, _ = listener.accept()
            with first, second:
                assert first.getpeername() == early.getsockname()
                assert kernel_values(first) == (0, d.idle, d.interval, d.count, 0)
                assert kernel_values(second) == EXPECTED


def test_disabling_the_listener_stops_inheritance() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ka.apply(listener, POLICY)
        ka.apply(listener, ka.KeepAlive.disabled())
        with socket.create_connection(listener.getsockname()):
            accepted, _ = listener.accept()
            with accepted:
                values = kernel_values(accepted)
                # SO_KEEPALIVE is off; the timing values stay as set and would apply if turned back on.
                assert values == (0, 47, 6, 4, 71000)
                assert ka.read(accepted).enabled is False
