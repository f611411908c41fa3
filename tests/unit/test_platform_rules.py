"""Per-OS rules of a policy's figures: whose detection time (only Linux lets a user timeout cut
keepalive short) and how large idle + interval * count may be (macOS and the BSDs add them in 32
bits). Other platforms are simulated by patching ``ka.units.PLATFORM`` and the limits a
``KeepAlive`` is checked against."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import ka
from ka import _options, units


@pytest.fixture
def on(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """``on("darwin")`` makes ka validate and count as that platform does."""

    def switch(platform: str) -> None:
        monkeypatch.setattr(units, "PLATFORM", platform)
        monkeypatch.setattr(ka.policy, "LIMITS", _options.LIMITS_BY_PLATFORM[platform])

    return switch


POLICY_ARGS = (60, 10, 5)


def test_linux_keeps_its_user_timeout_rule() -> None:
    policy = ka.KeepAlive(*POLICY_ARGS, user_timeout=30)
    assert policy.detection_time == 70.0  # 60 + 10 * ceil((30 - 60) / 10) floored at one probe
    assert policy.detection_time_with(None) == 70.0
    assert policy.detection_time_with(None, platform="linux") == 70.0
    assert ka.KeepAlive(2, 1, 3, user_timeout=3).detection_time == 3.0


@pytest.mark.parametrize("platform", ["darwin", "macos", "freebsd", "bsd", "netbsd", "windows", "win32"])
def test_elsewhere_a_user_timeout_does_not_shorten_keepalive(platform: str) -> None:
    """macOS checks TCP_RXT_CONNDROPTIME in the retransmit timer only (xnu tcp_timer.c 1094-1095,
    TCPT_REXMT), never in TCPT_KEEP; Windows documents TCP_MAXRT as a retransmission timeout; the
    BSDs have none."""
    policy = ka.KeepAlive(*POLICY_ARGS, user_timeout=30)
    assert policy.detection_time_with(None, platform=platform) == 110.0
    assert units.detection_time(60, 10, 5, 30, platform=platform) == 110.0
    assert units.detection_time(60, 10, 5, 30, platform="linux") == 70.0


def test_the_platform_figure_is_this_platforms_by_default(on: Callable[[str], None]) -> None:
    on("darwin")
    policy = ka.KeepAlive(*POLICY_ARGS, user_timeout=30)
    assert policy.detection_time == 110.0
    assert policy.detection_time_with(ka.SystemDefaults(7200, 75, 8, "test")) == 110.0
    assert policy.detection_time_with(None, platform="linux") == 70.0


def test_an_unknown_platform_is_named() -> None:
    with pytest.raises(ValueError, match="platform='plan9' is not a platform ka knows: expected one of"):
        ka.KeepAlive(*POLICY_ARGS).detection_time_with(None, platform="plan9")
    with pytest.raises(TypeError, match="platform must be a str or None"):
        units.detection_time(1, 1, 1, platform=3)  # type: ignore[arg-type]
    assert units.platform_named("freebsd14") == "freebsd" and units.platform_named("linux2") == "linux"


@pytest.mark.parametrize(
    ("platform", "maximum", "unit"),
    [("darwin", 4294967, "milliseconds"), ("freebsd", 2147483, "timer ticks")],
)
def test_a_sum_beyond_32_bits_is_refused(
    on: Callable[[str], None], platform: str, maximum: int, unit: str
) -> None:
    """xnu adds idle and interval * count as uint32 milliseconds (tcp_timer.h TCP_CONN_KEEPIDLE +
    TCP_CONN_MAXIDLE), FreeBSD as u_int ticks (TP_KEEPIDLE + TP_MAXIDLE): past that the sum wraps
    and the connection is dropped at the first expiry (test_retrofit_model.py shows it)."""
    on(platform)
    assert ka.KeepAlive(1, 1, maximum - 1).detection_time == maximum
    with pytest.raises(ValueError) as caught:
        ka.KeepAlive(1, 1, maximum)
    message = str(caught.value)
    assert f"idle + interval * count = 1 + 1 * {maximum} = {maximum + 1} s is out of range" in message
    assert f"unsigned 32-bit {unit}" in message and f"at most {maximum} s" in message
    with pytest.raises(ValueError, match="out of range"):
        ka.KeepAlive(2147483, 2147483, 2)
    with pytest.raises(ValueError, match="out of range"):
        ka.KeepAlive.parse(f"idle=1 interval=1 count={maximum}")
    assert ka.KeepAlive(idle=2147483).idle == 2147483  # fields left as they are count as 0


@pytest.mark.parametrize("platform", ["darwin", "freebsd"])
def test_the_recipes_fit_the_sum(on: Callable[[str], None], platform: str) -> None:
    on(platform)
    maximum = _options.MAX_DETECTION_BY_PLATFORM[platform]
    assert maximum is not None
    for policy in (
        ka.KeepAlive.within(10**9),
        ka.KeepAlive.for_http_idle_timeout(10**9),
        ka.KeepAlive.for_middlebox(10**9),
        ka.KeepAlive.for_middlebox(10**9, detect_within=10**9),
    ):
        assert policy.detection_time is not None and policy.detection_time <= maximum, policy
    assert ka.KeepAlive.within(30) == ka.KeepAlive(21, 3, 3, user_timeout="auto")  # small ones as before


def test_linux_has_no_sum_limit() -> None:
    assert ka.KeepAlive(32767, 32767, 127).detection_time == 32767 + 32767 * 127
    assert _options.MAX_DETECTION_BY_PLATFORM["linux"] is None
