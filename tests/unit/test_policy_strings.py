"""KeepAlive.parse / str(policy) / ka.resolve_policy: the policy as one string (KA_POLICY)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ka
from ka.policy import KeepAlive

CAPS = ka.capabilities()


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("idle=60 interval=10 count=5", KeepAlive(60, 10, 5)),
        ("idle=60,interval=10,count=5", KeepAlive(60, 10, 5)),
        ("  idle = 60 ,  interval=10s, count=5  ", KeepAlive(60, 10, 5)),
        ("idle=10m interval=30s count=4 user_timeout=auto", KeepAlive(600, 30, 4, user_timeout="auto")),
        ("IDLE=1h30m Interval=1.5 user-timeout=500ms", KeepAlive(5400, 2, user_timeout=0.5)),
        ("within=30s", KeepAlive.within(30)),
        ("within=2m count=5 user_timeout=0", KeepAlive.within(120, count=5, user_timeout=0)),
        ("off", KeepAlive.disabled()),
        ("off user_timeout=5", KeepAlive(enabled=False, user_timeout=5)),
        ("on", KeepAlive()),
        ("on count=3", KeepAlive(count=3)),
        ("count=3", KeepAlive(count=3)),
    ],
)
def test_parse(text: str, policy: KeepAlive) -> None:
    assert KeepAlive.parse(text) == policy


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"'' is empty: expected idle=DURATION"),
        (" , ", r"is empty"),
        ("idle", r"part 'idle' is not KEY=VALUE, on or off"),
        ("idle=1h 30m", r"part '30m' is not KEY=VALUE.*durations take no spaces"),
        ("idle=x", r"part 'idle=x' is not a duration: expected seconds"),
        ("idle=-5", r"part 'idle=-5' is not a duration"),
        ("interval=5parsecs", r"part 'interval=5parsecs' is not a duration"),
        ("count=1.5", r"part 'count=1.5' is not a whole number of probes"),
        ("count=many", r"part 'count=many' is not a whole number"),
        # Digits str.isdigit() takes and int() refuses, and a count int() refuses to convert (issue 19).
        ("count=\u00b2", r"part 'count=\u00b2' is not a whole number of probes: expected count=5"),
        ("count=\u0663", r"part 'count=\u0663' is not a whole number of probes"),
        ("count=" + "9" * 5000, r"part 'count=999999999999\.\.\. \(5000 digits\)' is out of range"),
        ("count=0000000000000000000005 idle=0", r"idle must be positive"),  # leading zeros are fine
        ("foo=3", r"part 'foo=3' names no setting: expected one of idle, interval, count"),
        ("idle=1 idle=2", r"part 'idle=2' repeats idle \(already '1'\)"),
        ("idle=", r"part 'idle=' has no value: expected idle=VALUE"),
        ("on off", r"part 'off' contradicts or repeats 'on'"),
        ("off idle=3", r"'off' turns keepalive off: it takes no idle"),
        ("within=30 idle=3", r"give within= or idle/interval, not both"),
        ("within=1", r"deadline=1 is too short"),
        ("idle=0", r"idle must be positive, not 0"),
        ("count=999", r"count=999 is out of range: count takes 1 to"),
        ("user_timeout=soon", r"part 'user_timeout=soon' is not a duration"),
        ("idle=60 user_timeout=auto", r"user_timeout='auto' .* needs all three"),
    ],
)
def test_parse_rejects_bad_text_naming_the_part(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        KeepAlive.parse(text)
    assert repr(text) in str(info.value)  # the whole text too, for a value that came from far away


def test_parse_takes_text_only() -> None:
    with pytest.raises(TypeError, match="a keepalive policy must be text, not int 60"):
        KeepAlive.parse(60)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("policy", "text"),
    [
        (KeepAlive(60, 10, 5), "idle=60 interval=10 count=5"),
        (KeepAlive(1.5, 2, user_timeout=12.3456), "idle=2 interval=2 user_timeout=12.346"),
        (KeepAlive.disabled(), "off"),
        (KeepAlive(enabled=False, user_timeout=0), "off user_timeout=0"),
        (KeepAlive(), "on"),
        (KeepAlive(count=4), "count=4"),
    ],
)
def test_str(policy: KeepAlive, text: str) -> None:
    assert str(policy) == text
    assert KeepAlive.parse(text) == policy


durations = st.one_of(st.none(), st.integers(1, CAPS.max_idle), st.floats(0.001, 3600.0))
user_timeouts = (
    st.one_of(st.none(), st.just(0), st.floats(0.001, CAPS.max_user_timeout_ms / 1000))
    if CAPS.user_timeout
    else st.none()
)


@given(
    idle=durations,
    interval=st.one_of(st.none(), st.integers(1, CAPS.max_interval)),
    count=st.one_of(st.none(), st.integers(1, CAPS.max_count)),
    user_timeout=user_timeouts,
    enabled=st.booleans(),
)
def test_str_parses_back_to_an_equal_policy(
    idle: float | None, interval: int | None, count: int | None, user_timeout: float | None, enabled: bool
) -> None:
    if enabled:
        policy = KeepAlive(idle, interval, count, user_timeout=user_timeout)
    else:
        policy = KeepAlive(enabled=False, user_timeout=user_timeout)
    assert KeepAlive.parse(str(policy)) == policy
    assert KeepAlive.parse(str(policy).replace(" ", ",")) == policy


def test_resolve_policy_takes_a_policy_or_a_string() -> None:
    policy = KeepAlive(60, 10, 5)
    assert ka.resolve_policy(policy) is policy
    assert ka.resolve_policy("idle=60 interval=10 count=5") == policy
    with pytest.raises(TypeError, match=r"policy must be a ka\.KeepAlive, a policy string or None, not int"):
        ka.resolve_policy(60)  # type: ignore[arg-type]


def test_resolve_policy_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KA_POLICY", "idle=37 interval=6 count=3")
    assert ka.resolve_policy(None) == KeepAlive(37, 6, 3)
    assert ka.resolve_policy("off") == KeepAlive.disabled()  # given beats the environment
    monkeypatch.setenv("MY_POLICY", "within=30s")
    assert ka.resolve_policy(None, env_var="MY_POLICY") == KeepAlive.within(30)


def test_resolve_policy_without_policy_or_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KA_POLICY", raising=False)
    with pytest.raises(
        ValueError, match="no keepalive policy was given and the environment variable KA_POLICY is not set"
    ):
        ka.resolve_policy(None)
    monkeypatch.setenv("KA_POLICY", "  ")
    with pytest.raises(ValueError, match="KA_POLICY is empty"):
        ka.resolve_policy(None)


def test_resolve_policy_names_a_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVER_KA", "idle=soon")
    with pytest.raises(
        ValueError, match=r"environment variable SERVER_KA: keepalive policy 'idle=soon': part"
    ):
        ka.resolve_policy(None, env_var="SERVER_KA")
