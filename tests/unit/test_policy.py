"""KeepAlive: values, units, rounding, validation, derived figures, value semantics."""

from __future__ import annotations

import datetime
import math
import pickle

import pytest

import ka
import ka.system
from ka.policy import KeepAlive

CAPS = ka.capabilities()


def test_fields_and_detection_time() -> None:
    p = KeepAlive(idle=60, interval=10, count=5)
    assert (p.idle, p.interval, p.count, p.user_timeout, p.enabled) == (60, 10, 5, None, True)
    assert p.detection_time == 110.0


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        (1, 1),
        (0.2, 1),  # never rounded to 0
        (1e-9, 1),
        (1.5, 2),  # rounded up, as Go does
        (2.0, 2),
        (0.1 * 3 * 10, 3),  # float noise below a microsecond is not rounded up
        (59.999999, 60),
        (datetime.timedelta(minutes=2), 120),
        (datetime.timedelta(seconds=1, microseconds=1), 2),
        (datetime.timedelta(microseconds=1), 1),
    ],
)
def test_durations_round_up_to_whole_seconds(given: object, seconds: int) -> None:
    p = KeepAlive(idle=given, interval=given)  # type: ignore[arg-type,unused-ignore]
    assert p.idle == seconds
    assert p.interval == seconds


def test_user_timeout_rounds_up_to_milliseconds() -> None:
    assert KeepAlive(user_timeout=0.0001).user_timeout_ms == 1
    assert KeepAlive(user_timeout=1.2345).user_timeout_ms == 1235
    assert KeepAlive(user_timeout=datetime.timedelta(seconds=3)).user_timeout_ms == 3000
    assert KeepAlive(user_timeout=0).user_timeout_ms == 0
    assert KeepAlive(user_timeout=0.0).user_timeout_ms == 0


def test_auto_user_timeout_is_detection_time() -> None:
    p = KeepAlive(idle=7, interval=3, count=4, user_timeout="auto")
    assert p.user_timeout == p.detection_time == 19.0
    assert p.user_timeout_ms == 19000


def test_auto_user_timeout_needs_all_three() -> None:
    with pytest.raises(ValueError, match="needs all three"):
        KeepAlive(idle=7, user_timeout="auto")


def test_within_finds_dead_peer_in_time() -> None:
    for deadline in (2, 3, 5, 10, 30, 59.9, 110, 600, 7200, 100000):
        p = KeepAlive.within(deadline)
        assert p.detection_time is not None
        assert p.detection_time <= deadline
        assert p.detection_time >= min(deadline, CAPS.max_idle) - p.interval * p.count  # type: ignore[operator]
        assert p.idle and p.interval and p.count
    assert KeepAlive.within(30) == KeepAlive(21, 3, 3, user_timeout="auto")
    assert KeepAlive.within(30, count=5, user_timeout=None) == KeepAlive(20, 2, 5)


def test_within_rejects_too_short() -> None:
    with pytest.raises(ValueError, match="deadline=1 is too short"):
        KeepAlive.within(1)


def test_detection_time_does_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15: the property used to read /proc (system_defaults) for a partial policy."""

    def no_io() -> ka.SystemDefaults:
        raise AssertionError("detection_time read the system defaults")

    monkeypatch.setattr(ka.system, "system_defaults", no_io)
    monkeypatch.setattr(ka, "system_defaults", no_io)
    assert KeepAlive().detection_time is None
    assert KeepAlive(idle=5, count=3).detection_time is None
    assert KeepAlive(5, 2, 3).detection_time == 11.0
    assert KeepAlive.disabled().detection_time is None


def test_detection_time_with_defaults() -> None:
    linux = ka.SystemDefaults(7200, 75, 9, "Linux's defaults")
    assert KeepAlive().detection_time_with(linux) == 7875.0
    assert KeepAlive(idle=5).detection_time_with(linux) == 5 + 75 * 9
    assert KeepAlive(5, 2, 3).detection_time_with(linux) == 11.0  # nothing left to the defaults
    assert KeepAlive(idle=5).detection_time_with(None) is None
    assert KeepAlive.disabled().detection_time_with(linux) is None
    d = ka.system_defaults()
    assert KeepAlive(idle=5).detection_time_with(d) == 5 + d.interval * d.count


def test_value_semantics() -> None:
    a = KeepAlive(60, 10, 5, user_timeout="auto")
    b = KeepAlive(idle=datetime.timedelta(seconds=60), interval=9.5, count=5, user_timeout=110)
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != KeepAlive(60, 10, 6)
    assert repr(a) == "KeepAlive(idle=60, interval=10, count=5, user_timeout=110.0)"
    assert repr(KeepAlive.disabled()) == "KeepAlive(enabled=False)"
    assert pickle.loads(pickle.dumps(a)) == a
    assert eval(repr(a), {"KeepAlive": KeepAlive}) == a
    with pytest.raises(AttributeError, match="immutable"):
        a.idle = 5  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        a._idle = 5
    assert a.replace(count=7) == KeepAlive(60, 10, 7, user_timeout=110)
    assert a.as_dict() == {"idle": 60, "interval": 10, "count": 5, "user_timeout": 110.0, "enabled": True}


BAD_VALUES = [
    ({"idle": 0}, ValueError, "idle must be positive, not 0"),
    ({"idle": -1}, ValueError, "idle must be positive, not -1"),
    ({"idle": -0.5}, ValueError, "idle must be positive"),
    ({"idle": CAPS.max_idle + 1}, ValueError, f"takes 1 to {CAPS.max_idle} seconds"),
    ({"idle": CAPS.max_idle + 0.5}, ValueError, "out of range"),
    ({"idle": 10**100}, ValueError, "out of range"),
    ({"idle": math.nan}, ValueError, "finite"),
    ({"idle": math.inf}, ValueError, "finite"),
    ({"idle": -math.inf}, ValueError, "finite"),
    ({"idle": True}, TypeError, "idle must be a number of seconds"),
    ({"idle": "60"}, TypeError, "not str '60'"),
    ({"idle": b"60"}, TypeError, "not bytes"),
    ({"idle": [60]}, TypeError, "not list"),
    ({"idle": datetime.timedelta(seconds=-1)}, ValueError, "must be positive"),
    ({"idle": datetime.timedelta(0)}, ValueError, "must be positive"),
    ({"interval": 0}, ValueError, "interval must be positive"),
    ({"interval": CAPS.max_interval + 1}, ValueError, "interval takes 1 to"),
    ({"interval": complex(1, 1)}, TypeError, "interval must be a number"),
    ({"count": 0}, ValueError, f"count takes 1 to {CAPS.max_count} probes"),
    ({"count": -3}, ValueError, "count=-3 is out of range"),
    ({"count": CAPS.max_count + 1}, ValueError, "out of range"),
    ({"count": 2.0}, TypeError, "count must be a whole number of probes"),
    ({"count": "3"}, TypeError, "not str '3'"),
    ({"count": False}, TypeError, "not bool"),
    ({"count": 10**30}, ValueError, "out of range"),
    ({"user_timeout": -1}, ValueError, "must be positive"),
    ({"user_timeout": "soon"}, ValueError, "'auto', 0 or None"),
    ({"user_timeout": math.nan}, ValueError, "finite"),
    ({"user_timeout": True}, TypeError, "user_timeout must be a number"),
    ({"enabled": 1}, TypeError, "enabled must be True or False"),
    ({"enabled": None}, TypeError, "enabled must be True or False"),
    ({"enabled": False, "idle": 5}, ValueError, "a disabled policy"),
]
if CAPS.user_timeout:
    BAD_VALUES.append(({"user_timeout": 2**31}, ValueError, "user_timeout takes 0.001 to"))


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_VALUES, ids=[repr(k) for k, _, _ in BAD_VALUES])
def test_bad_values_are_named(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        KeepAlive(**kwargs)  # type: ignore[arg-type]


def test_replace_rejects_unknown_fields() -> None:
    with pytest.raises(TypeError, match="unknown fields"):
        KeepAlive().replace(idel=4)


@pytest.mark.skipif(not CAPS.user_timeout, reason="TCP_USER_TIMEOUT is Linux only")
@pytest.mark.parametrize(
    ("user_timeout", "expected"),
    [
        (None, 5.0),  # idle + interval * count
        (0, 5.0),  # the system's behaviour: count decides
        (3, 3.0),  # the first probe tick at or past 3 s (measured 3.04 s in test_kernel_deadpeer)
        (2.5, 3.0),
        (1, 3.0),  # at least one probe goes out first: idle + one interval
        (100, 100.0),  # a user timeout overrides count: probes go on until it
        (100.5, 101.0),
    ],
)
def test_detection_time_follows_the_user_timeout(user_timeout: float | None, expected: float) -> None:
    policy = KeepAlive(idle=2, interval=1, count=3, user_timeout=user_timeout)
    assert policy.detection_time == expected
    settings = ka.KeepAliveSettings(True, 2, 1, 3, None if user_timeout is None else policy.user_timeout)
    assert settings.detection_time == expected
