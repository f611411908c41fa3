"""The retrofit drop on macOS and FreeBSD, and ka.retrofit's bridge, on the MODEL of their
keepalive timers (tests/keepalive_timer_model.py), fed the exact calls ka's shim makes there.

The calls come from the recording stand-in: the shim compiled for macOS and FreeBSD, each
``ka_apply_one``/``ka_read_one`` recorded. Today's sequence is one ``ka_apply_one`` of the policy
(what ``ka.apply``/``apply_many`` do); the fixed one is ``ka.retrofit``'s plan for that OS
(``ka.bridge.bridge_for``): the bridge, then ``Bridge.wait`` later the read-back and the policy.
Quiet times run from 0 to 10 x interval x count over a spread of policies; the peer answers after
a round trip, or is dead. ``python tests/keepalive_timer_model.py`` prints the table.
"""

from __future__ import annotations

import ctypes
import itertools

import pytest

import ka
from ka.bridge import Bridge, bridge_for, check_bridgeable
from keepalive_timer_model import FREEBSD, KERNELS, STANDIN_OS, XNU, ModelConnection, Outcome, Step, sequences
from standin_build import c_apply, needs_standin

pytestmark = needs_standin

# interval * count from 2 s (ka.retrofit's minimum) up; Linux-valid values, so buildable here.
POLICIES = [
    ka.KeepAlive(1, 1, 2),
    ka.KeepAlive(2, 2, 1),
    ka.KeepAlive(2, 1, 3),
    ka.KeepAlive(5, 2, 3),
    ka.KeepAlive(10, 5, 3),
    ka.KeepAlive(60, 10, 5),
    ka.KeepAlive(30, 30, 2),
    ka.KeepAlive(600, 60, 5),
    ka.KeepAlive(7200, 75, 8),
]
QUIET_FACTORS = [0, 0.25, 0.5, 0.9, 0.99, 1, 1.01, 1.5, 2, 5, 10]  # x interval x count
LATE = {XNU: 500, FREEBSD: 1}  # worst expiry lateness: xnu's 500 ms quantum, one FreeBSD tick
RTTS = [1, 100, 900]  # ms; below every policy's idle


def span_ms(policy: ka.KeepAlive) -> int:
    assert policy.interval is not None and policy.count is not None
    return policy.interval * policy.count * 1000


def horizon(policy: ka.KeepAlive, bridge: Bridge) -> int:
    """Long enough for the policy's first expiries after it lands, a few probe rounds included."""
    assert policy.idle is not None
    return int(bridge.wait * 1000) + policy.idle * 1000 + 3 * span_ms(policy) + 10_000


def os_bridge(kernel: str) -> Bridge:
    bridge = bridge_for(STANDIN_OS[kernel])
    assert bridge is not None
    return bridge


def quiet_times(policy: ka.KeepAlive) -> list[int]:
    return [int(f * span_ms(policy)) for f in QUIET_FACTORS]


@pytest.mark.parametrize("kernel", KERNELS)
def test_today_a_quiet_connection_is_dropped_without_a_probe(
    standins: dict[str, ctypes.CDLL], kernel: str
) -> None:
    """ka.apply's sequence: the idle re-arms the timer, whose first expiry drops every connection
    quiet for interval x count (less the expiry's lateness), and sends no probe first."""
    lib, bridge = standins[STANDIN_OS[kernel]], os_bridge(kernel)
    dropped = 0
    for policy, late in itertools.product(POLICIES, (0, LATE[kernel])):
        today = sequences(lib, policy, bridge)[0]
        for quiet in quiet_times(policy):
            model = ModelConnection(kernel, quiet=quiet, peer_alive=True, lateness=late)
            out = model.run(today, until=horizon(policy, bridge))
            assert policy.idle is not None
            expected = quiet + late >= span_ms(policy)
            assert out.dropped == expected, (kernel, policy, quiet, late, out)
            if expected:
                assert out.dropped_at == policy.idle * 1000 + late and out.probes == [], out
                dropped += 1
    assert dropped > 0


def _every_lateness(kernel: str, arms: int = 5) -> list[list[int]]:
    """Each expiry of the first ``arms`` on time or at the worst lateness, in every combination."""
    return [list(c) for c in itertools.product((0, LATE[kernel]), repeat=arms)]


@pytest.mark.parametrize("kernel", KERNELS)
def test_the_bridge_drops_no_healthy_connection(standins: dict[str, ctypes.CDLL], kernel: str) -> None:
    """ka.retrofit's sequence: for every policy, quiet time, round trip and timing of the first
    expiries, the connection survives and ends with the policy's values, probed by them."""
    lib, bridge = standins[STANDIN_OS[kernel]], os_bridge(kernel)
    runs = 0
    for policy in POLICIES:
        fixed = sequences(lib, policy, bridge)[1]
        landed = int(bridge.wait * 1000)
        for quiet, rtt, late in itertools.product(quiet_times(policy), RTTS, _every_lateness(kernel)):
            model = ModelConnection(kernel, quiet=quiet, peer_alive=True, rtt=rtt, lateness=late)
            out = model.run(fixed, until=horizon(policy, bridge))
            assert not out.dropped, (kernel, policy, quiet, rtt, late, out)
            assert policy.idle is not None and policy.interval is not None
            assert (model.keepidle, model.keepintvl, model.keepcnt) == (
                policy.idle * 1000,
                policy.interval * 1000,
                policy.count,
            )
            assert any(probe >= landed + policy.idle * 1000 for probe in out.probes), out
            runs += 1
    assert runs == len(POLICIES) * len(QUIET_FACTORS) * len(RTTS) * 2**5


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_span_of_one_second_is_refused(standins: dict[str, ctypes.CDLL], kernel: str) -> None:
    """interval x count of 1 s: the bridge's last reply can be 1 s old when the policy lands, and
    its first expiry can then find the connection quiet for idle + 1 s: dropped. retrofit refuses
    such a policy before any system call."""
    lib, bridge = standins[STANDIN_OS[kernel]], os_bridge(kernel)
    assert bridge.min_span == 2
    policy = ka.KeepAlive(1, 1, 1)
    fixed = sequences(lib, policy, bridge)[1]
    outcomes = [
        ModelConnection(kernel, quiet=10_000, peer_alive=True, rtt=1, lateness=late).run(
            fixed, until=horizon(policy, bridge)
        )
        for late in _every_lateness(kernel)
    ]
    assert any(out.dropped for out in outcomes)
    with pytest.raises(ValueError, match="interval \\* count = 1 s, below the 2 s"):
        check_bridgeable(policy, bridge, STANDIN_OS[kernel])


def _dead(kernel: str, steps: list[Step], quiet: int, late: int) -> Outcome:
    return ModelConnection(kernel, quiet=quiet, peer_alive=False, lateness=late).run(steps, until=10**8)


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_dead_peer_is_still_found_at_most_the_wait_later(
    standins: dict[str, ctypes.CDLL], kernel: str
) -> None:
    """A peer that never answers: the bridge never drops it by itself (its count outlasts any quiet
    time), and the policy finds it no later than one step would have, plus the bridge's wait."""
    lib, bridge = standins[STANDIN_OS[kernel]], os_bridge(kernel)
    for policy, late in itertools.product(POLICIES, (0, LATE[kernel])):
        today, fixed = sequences(lib, policy, bridge)
        for quiet in quiet_times(policy):
            one_step, bridged = _dead(kernel, today, quiet, late), _dead(kernel, fixed, quiet, late)
            assert one_step.dropped_at is not None and bridged.dropped_at is not None
            assert bridged.dropped_at >= int(bridge.wait * 1000), bridged  # not before the policy
            assert bridged.dropped_at <= one_step.dropped_at + int(bridge.wait * 1000), (policy, quiet)


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_sum_beyond_32_bits_drops_at_the_first_expiry(
    standins: dict[str, ctypes.CDLL], kernel: str
) -> None:
    """idle + interval x count past the kernel's 32-bit sum wraps: even a fresh connection is
    dropped at the first expiry. ka refuses such a policy on macOS and the BSDs (units.py)."""
    lib = standins[STANDIN_OS[kernel]]
    # Values the stand-in takes as they are (ka's own Linux limits would refuse them here).
    idle = interval = 2147483
    calls = c_apply(lib, (1, idle, interval, 2, -1))[0]
    out = ModelConnection(kernel, quiet=0, peer_alive=True).run([Step(0, calls)], until=10**10)
    assert out.dropped_at == idle * 1000 and out.probes == []
    fits = c_apply(lib, (1, idle, interval, 1, -1))[0]
    out = ModelConnection(kernel, quiet=0, peer_alive=True).run([Step(0, fits)], until=idle * 1000 + 5000)
    assert not out.dropped and out.probes == [idle * 1000]
