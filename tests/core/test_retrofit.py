"""ka.retrofit and ka.aio.retrofit: apply_many where one step is safe (Linux), and the bridge's
orchestration run here by giving Linux a bridge (a Linux-valid count, a short wait, Linux's
TCP_INFO state numbers): which sockets are bridged, the read-back that leaves a closed or reused
descriptor alone, and every input accounted for. The timers themselves: test_retrofit_model.py
(the model) and tests/kernel/test_kernel_retrofit.py (macOS, FreeBSD).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

import ka
import ka.aio
import ka.bridge
from helpers import fresh_values, kernel_values, loopback_pair
from ka.bridge import Bridge, Route
from ka.protocol import Spec

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux option numbers")

POLICY = ka.KeepAlive(idle=41, interval=9, count=6)
APPLIED = (1, 41, 9, 6)
LINUX_BRIDGE = Bridge(Spec(1, 1, 1, 127, -1), 0.2, 2)  # count 127: Linux's maximum
TCP_INFO_LINUX = 11
TCP_ESTABLISHED_LINUX = 1


def test_linux_needs_no_bridge() -> None:
    assert ka.bridge.bridge_for() is None
    assert ka.bridge.bridge_for("linux") is None and ka.bridge.bridge_for("windows") is None
    assert ka.bridge.bridge_for("openbsd") is None  # no idle to set: nothing re-arms
    for name in ("darwin", "macos", "freebsd", "netbsd", "dragonfly"):
        bridge = ka.bridge.bridge_for(name)
        assert bridge is not None and bridge.spec[:3] == (1, 1, 1) and bridge.wait == 2.0
    darwin, bsd = ka.bridge.bridge_for("darwin"), ka.bridge.bridge_for("freebsd")
    assert darwin is not None and bsd is not None
    # interval * count outlasts any quiet time the kernel's 32-bit sum can count
    assert 1 + darwin.spec.count == 4294967 and 1 + bsd.spec.count == 2147483


def test_on_linux_it_is_apply_many(pair: tuple[socket.socket, socket.socket]) -> None:
    client, accepted = pair
    closed = socket.socket()
    closed.close()
    with tempfile.TemporaryFile() as f:
        targets: list[ka.targets.Target] = [client, accepted, closed, f.fileno()]
        result = ka.retrofit(targets, POLICY)
        plain = ka.apply_many(targets, POLICY)
    assert isinstance(result, ka.RetrofitResult) and result.waited == 0.0
    assert list(result.routes) == [Route.DIRECT] * 4 and result.bridged == 0
    assert [(f.index, f.errno, f.option) for f in result.failed] == [
        (f.index, f.errno, f.option) for f in plain.failed
    ]
    assert kernel_values(client)[:4] == kernel_values(accepted)[:4] == APPLIED
    assert "RetrofitResult 4 sockets: 2 applied (0 bridged), 2 failed" in repr(result)


@pytest.fixture
def linux_bridge(monkeypatch: pytest.MonkeyPatch) -> Bridge:
    """ka.retrofit bridging on Linux: Linux's TCP_INFO for the state, ESTABLISHED only."""
    monkeypatch.setattr(ka.bridge, "bridge_for", lambda platform=None: LINUX_BRIDGE)
    monkeypatch.setitem(ka.bridge.STATE_OPTIONS, "linux", TCP_INFO_LINUX)
    monkeypatch.setattr(ka.bridge, "TCPS_ESTABLISHED", TCP_ESTABLISHED_LINUX)
    monkeypatch.setattr(ka.bridge, "TCPS_FIN_WAIT_2", TCP_ESTABLISHED_LINUX)
    return LINUX_BRIDGE


@pytest.fixture
def mixed() -> Iterator[tuple[list[ka.targets.Target], socket.socket, socket.socket, socket.socket]]:
    """An established pair, a listener, a UDP socket and a closed socket."""
    with ExitStack() as stack:
        client, accepted = stack.enter_context(loopback_pair())
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        udp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        closed = socket.socket()
        closed.close()
        yield [client, accepted, listener, udp, closed], client, accepted, listener


def test_established_connections_are_bridged_the_rest_applied_at_once(
    linux_bridge: Bridge, mixed: tuple[list[ka.targets.Target], socket.socket, socket.socket, socket.socket]
) -> None:
    targets, client, accepted, listener = mixed
    run = ka.bridge.Retrofit(targets, POLICY)
    assert run.start() == linux_bridge.wait
    # Between the halves: the connections carry the bridge, the listener already the policy.
    assert kernel_values(client)[:4] == kernel_values(accepted)[:4] == (1, 1, 1, 127)
    assert kernel_values(listener)[:4] == APPLIED
    time.sleep(run.remaining())
    result = run.finish()
    assert list(result.routes) == [Route.BRIDGED, Route.BRIDGED, Route.DIRECT, Route.DIRECT, Route.DIRECT]
    assert kernel_values(client)[:4] == kernel_values(accepted)[:4] == APPLIED
    assert [(f.index, f.errno, f.option) for f in result.failed] == [
        (3, errno.ENOPROTOOPT, ka.Option.IDLE),  # UDP: SO_KEEPALIVE takes, TCP_KEEPIDLE does not
        (4, errno.EBADF, ka.Option.KEEPALIVE),
    ]
    assert result.applied + result.failed_count == len(targets) and result.bridged == 2


def test_finish_refuses_to_come_early(linux_bridge: Bridge) -> None:
    with loopback_pair() as (client, _):
        run = ka.bridge.Retrofit([client], POLICY)
        assert run.start() == linux_bridge.wait
        with pytest.raises(RuntimeError, match=r"came .* s before the bridge's wait was over"):
            run.finish()
        assert kernel_values(client)[:4] == (1, 1, 1, 127)  # still the bridge
        time.sleep(run.remaining())
        assert run.finish().ok and kernel_values(client)[:4] == APPLIED


def test_the_sync_call_waits_between_the_halves(linux_bridge: Bridge) -> None:
    with loopback_pair() as (client, accepted):
        result = ka.retrofit([client, accepted], POLICY)
        assert result.ok and result.bridged == 2 and result.waited >= linux_bridge.wait
        assert kernel_values(client)[:4] == APPLIED


def test_a_descriptor_closed_or_reused_during_the_wait_is_left_alone(linux_bridge: Bridge) -> None:
    """The number of a bridged socket closed meanwhile may name another socket by the end of the
    wait: ka reads each one back and touches only those still carrying the bridge."""
    with loopback_pair() as (a, _), loopback_pair() as (c, d), socket.socket() as newcomer:
        reused, freed = os.dup(c.fileno()), os.dup(d.fileno())
        run = ka.bridge.Retrofit([a, reused, freed], POLICY)
        run.start()
        os.dup2(newcomer.fileno(), reused)  # the number now names a fresh, unrelated socket
        os.close(freed)  # and this one names nothing
        time.sleep(run.remaining())
        result = run.finish()
        try:
            assert list(result.routes) == [Route.BRIDGED, Route.LOST, Route.LOST]
            assert [(f.index, f.errno, f.option) for f in result.failed] == [
                (1, errno.ESTALE, ka.Option.NONE),
                (2, errno.EBADF, ka.Option.KEEPALIVE),
            ]
            with socket.socket(fileno=os.dup(reused)) as view:
                assert kernel_values(view) == fresh_values()  # the newcomer kept its own values
            assert kernel_values(a)[:4] == APPLIED
        finally:
            os.close(reused)


def test_a_failed_bridge_is_reported_and_the_policy_applied_at_once(
    linux_bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    with loopback_pair() as (client, accepted), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        # The UDP socket read as established: the bridge fails on it at TCP_KEEPIDLE.
        monkeypatch.setattr(ka.bridge, "_states", lambda fds, option: [TCP_ESTABLISHED_LINUX] * len(fds))
        result = ka.retrofit([client, udp, accepted], POLICY)
    assert list(result.routes) == [Route.BRIDGED, Route.BRIDGE_FAILED, Route.BRIDGED]
    assert [(f.index, f.errno, f.option) for f in result.failed] == [(1, errno.ENOPROTOOPT, ka.Option.IDLE)]


def test_no_wait_when_nothing_is_established(linux_bridge: Bridge) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener, socket.socket() as fresh:
        result = ka.retrofit([listener, fresh], POLICY)
        assert result.ok and result.waited == 0.0 and list(result.routes) == [Route.DIRECT] * 2
        assert kernel_values(fresh)[:4] == APPLIED


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (ka.KeepAlive(idle=60), "needs a policy that sets idle, interval and count"),
        (ka.KeepAlive(1, 1, 1), "interval \\* count = 1 s, below the 2 s"),
    ],
)
def test_a_policy_the_bridge_cannot_take_is_refused_before_any_call(
    linux_bridge: Bridge, policy: ka.KeepAlive, message: str
) -> None:
    with loopback_pair() as (client, _):
        before = kernel_values(client)
        with pytest.raises(ValueError, match=message):
            ka.retrofit([client], policy)
        assert kernel_values(client) == before


def test_bad_arguments_are_refused_before_any_call(linux_bridge: Bridge) -> None:
    with loopback_pair() as (client, _):
        before = kernel_values(client)
        with pytest.raises(ValueError, match="threads=0 is out of range"):
            ka.retrofit([client], POLICY, threads=0)
        with pytest.raises(ValueError, match="backend='fast' is not one of"):
            ka.retrofit([client], POLICY, backend="fast")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="targets\\[1\\] is str"):
            ka.retrofit([client, "x"], POLICY)  # type: ignore[list-item]
        with pytest.raises(TypeError, match=r"policy must be a ka\.KeepAlive"):
            ka.retrofit([client], "idle=60")  # type: ignore[arg-type]
        assert kernel_values(client) == before


def test_a_policy_that_sets_no_times_is_one_step(linux_bridge: Bridge) -> None:
    """Turning keepalive off, or on with the socket's own times, re-arms no timer."""
    with loopback_pair() as (client, _):
        result = ka.retrofit([client], ka.KeepAlive.disabled())
        assert result.ok and list(result.routes) == [Route.DIRECT] and kernel_values(client)[0] == 0
        result = ka.retrofit([client], ka.KeepAlive())
        assert result.ok and list(result.routes) == [Route.DIRECT] and kernel_values(client)[0] == 1


def test_aio_awaits_the_wait(linux_bridge: Bridge) -> None:
    """The event loop runs other tasks while the bridge waits."""

    async def main() -> tuple[ka.RetrofitResult, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        with loopback_pair() as (client, accepted):
            result = await ka.aio.retrofit([client, accepted], POLICY)
            assert kernel_values(client)[:4] == APPLIED
        task.cancel()
        return result, ticks

    result, ticks = asyncio.run(main())
    assert result.ok and result.bridged == 2 and ticks >= 5
