"""The TCP keepalive recipes beside KeepAlive.within: for_http_idle_timeout and for_middlebox."""

from __future__ import annotations

import datetime
import math
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import ka
from helpers import kernel_values, loopback_pair
from http_strategies import PROPS
from ka._options import LIMITS

policy_for_http_idle_timeout = ka.KeepAlive.for_http_idle_timeout
policy_for_middlebox = ka.KeepAlive.for_middlebox

# -- TCP keepalive policies --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (5, (5, 1, 3)),  # Apache's KeepAliveTimeout default
        (75, (75, 8, 3)),  # nginx's keepalive_timeout default
        (60, (60, 6, 3)),
        (1, (1, 1, 3)),
        (0.3, (1, 1, 3)),
        (datetime.timedelta(minutes=2), (120, 13, 3)),
    ],
)
def test_policy_for_http_idle_timeout_examples(seconds: Any, expected: tuple[int, int, int]) -> None:
    p = policy_for_http_idle_timeout(seconds)
    assert (p.idle, p.interval, p.count) == expected
    assert p.detection_time == expected[0] + expected[1] * expected[2]


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [
        (350, (315, 17, 3)),  # AWS NLB and NAT gateway
        (240, (216, 12, 3)),  # Azure Load Balancer's default 4 min
        (600, (540, 30, 3)),  # GCP VPC firewall connection tracking, 10 min
        (datetime.timedelta(minutes=4), (216, 12, 3)),
        (350.9, (315, 17, 3)),  # rounded down: 350.9 s allows no more than 350
        (3, (1, 1, 3)),
    ],
)
def test_policy_for_middlebox_examples(timeout: Any, expected: tuple[int, int, int]) -> None:
    p = policy_for_middlebox(timeout)
    assert (p.idle, p.interval, p.count) == expected


def test_policy_for_middlebox_with_a_detection_budget() -> None:
    assert policy_for_middlebox(350, detect_within=3600) == policy_for_middlebox(350)  # never slower
    p = policy_for_middlebox(350, detect_within=60)
    assert (p.idle, p.interval, p.count, p.detection_time) == (42, 6, 3, 60.0)
    p = policy_for_middlebox(350, detect_within=2)
    assert (p.idle, p.interval, p.count) == (1, 1, 1)


def test_policies_pass_user_timeout_and_count_through() -> None:
    assert policy_for_http_idle_timeout(5, user_timeout=None).user_timeout_ms is None
    assert policy_for_middlebox(350, count=5).count == 5
    if ka.capabilities().user_timeout:
        assert policy_for_middlebox(350).user_timeout == 366.0  # "auto": the detection time


_http: Any = policy_for_http_idle_timeout  # Any: the calls below pass wrong types on purpose
_box: Any = policy_for_middlebox


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: _http(0), ValueError, "seconds must be positive, not 0"),
        (lambda: _http(-5), ValueError, "seconds must be positive, not -5"),
        (lambda: _http(math.nan), ValueError, "seconds must be a finite number"),
        (lambda: _http("5"), TypeError, "seconds must be a number of seconds"),
        (lambda: _http(True), TypeError, "seconds must be a number of seconds"),
        (lambda: _http(5, count=0), ValueError, "count=0 is out of range"),
        (lambda: _box(2), ValueError, "idle_timeout=2 is too short"),
        (lambda: _box(2.99), ValueError, "idle_timeout=2.99 is too short"),
        (lambda: _box(-350), ValueError, "idle_timeout must be positive"),
        (lambda: _box(math.inf), ValueError, "idle_timeout must be a finite number"),
        (lambda: _box(None), TypeError, "idle_timeout must be a number of seconds"),
        (lambda: _box(350, detect_within=1), ValueError, "detect_within=1 is too short"),
        (lambda: _box(350, detect_within=0), ValueError, "detect_within must be positive"),
        (lambda: _box(350, count=1.0), TypeError, "count must be a whole number"),
    ],
)
def test_policy_input_errors(call: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()


@pytest.fixture(scope="module")
def probe_socket() -> Iterator[socket.socket]:
    """One connected loopback socket, to check that derived policies apply on this kernel."""
    with loopback_pair() as (client, _):
        yield client


def _applies(sock: socket.socket, policy: ka.KeepAlive) -> None:
    ka.apply(sock, policy)
    enabled, idle, interval, count, user_ms = kernel_values(sock)
    assert (enabled, idle, interval, count) == (1, policy.idle, policy.interval, policy.count)
    if policy.user_timeout_ms is not None:
        assert user_ms == policy.user_timeout_ms


_durations = st.one_of(
    st.integers(1, 10**7),
    st.floats(0.001, 1e7, allow_nan=False, allow_infinity=False),
    st.integers(1, 10**7).map(lambda s: datetime.timedelta(seconds=s)),
)


@PROPS
@given(seconds=_durations, count=st.integers(1, LIMITS.max_count))
def test_http_idle_policy_properties(probe_socket: socket.socket, seconds: Any, count: int) -> None:
    total = math.ceil(seconds.total_seconds() if isinstance(seconds, datetime.timedelta) else seconds)
    p = policy_for_http_idle_timeout(seconds, count=count)
    assert p.idle is not None and p.interval is not None and p.count == count
    assert p.idle == min(total, LIMITS.max_idle)  # idle keep-alive connections are never probed
    assert 1 <= p.interval <= max(1, total // (3 * count))
    assert p.detection_time is not None
    assert p.detection_time <= total + max(count, total / 3)  # about T
    _applies(probe_socket, p)


@PROPS
@given(
    timeout=_durations,
    detect_within=st.none() | _durations,
    count=st.integers(1, LIMITS.max_count),
)
def test_middlebox_policy_properties(
    probe_socket: socket.socket, timeout: Any, detect_within: Any, count: int
) -> None:
    def floor(d: Any) -> int:
        return math.floor(d.total_seconds() if isinstance(d, datetime.timedelta) else d)

    m = floor(timeout)
    d = None if detect_within is None else floor(detect_within)
    assume(m >= 3 and (d is None or d >= 2))
    p = policy_for_middlebox(timeout, detect_within=detect_within, count=count)
    assert p.idle is not None and p.interval is not None and p.count is not None
    assert p.idle < m  # the first probe refreshes the mapping before it expires
    assert p.interval < m
    assert p.idle + p.interval < m  # a lost first probe is retried in time
    assert p.idle <= m - max(2, math.ceil(m / 10))  # with margin
    assert p.detection_time is not None
    margin = max(2, math.ceil(m / 10))
    assert p.detection_time <= m - margin + max(1, margin // 2) * count  # bounded
    if d is not None:
        assert p.detection_time <= d
    _applies(probe_socket, p)


def test_derived_policies_apply_on_this_kernel(probe_socket: socket.socket) -> None:
    for p in (
        policy_for_http_idle_timeout(5),
        policy_for_http_idle_timeout(10**6),
        policy_for_middlebox(350),
        policy_for_middlebox(10**6, detect_within=10**6),
        policy_for_middlebox(3, detect_within=2),
    ):
        _applies(probe_socket, p)
