"""What a person reads when something fails, and values at the edges (issue 24's survivors):
BulkError beyond five failures, Failure.error, ReadResult's failed reads, settings_of's
unknowns, the Keep-Alive header's types, defaults and error messages, policy and string edges."""

from __future__ import annotations

import array
import enum
import errno
import json
import re
from typing import Any

import pytest

import ka
from ka import KeepAliveSettings
from ka.http import KeepAliveHeader, format_keep_alive, parse_connection, parse_keep_alive
from ka.protocol import Spec
from ka.results import BulkError, BulkResult, Failure, ReadResult, settings_of

CAPS = ka.capabilities()
H: Any = ka.http  # Any: the calls below pass wrong types on purpose


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


# --- results ---------------------------------------------------------------------------------


def _bulk(errnos: list[int]) -> BulkResult:
    n = len(errnos)
    fds = array.array("i", range(10, 10 + n))
    options = array.array("B", [ka.Option.IDLE if e else 0 for e in errnos])
    return BulkResult(fds, array.array("i", errnos), options, sum(1 for e in errnos if e))


def _shown(index: int) -> str:
    return f"#{index} fd {10 + index}: {ka.errors.strerror(errno.EBADF)} on {ka.Option.IDLE.system_name}"


def test_bulk_error_lists_five_failures_then_counts_the_rest() -> None:
    five = BulkError(_bulk([0] + [errno.EBADF] * 5))
    assert (
        str(five)
        == f"[Errno {errno.EBADF}] 5 of 6 sockets failed ({', '.join(_shown(i) for i in range(1, 6))})"
    )
    six = BulkError(_bulk([errno.EBADF] * 6))
    assert six.strerror == f"6 of 6 sockets failed ({', '.join(_shown(i) for i in range(5))} and 1 more)"
    seven = BulkError(_bulk([errno.EBADF] * 7 + [0, 0]))
    shown = ", ".join(_shown(i) for i in range(5))
    assert seven.strerror == f"7 of 9 sockets failed ({shown} and 2 more)"
    assert len(seven.failures) == 7 and seven.errno == errno.EBADF


def test_failure_error_is_what_a_single_call_raises() -> None:
    failure = Failure(3, 17, errno.EPERM, ka.Option.COUNT)
    setting = failure.error()
    assert isinstance(setting, PermissionError)
    assert (setting.errno, setting.fd, setting.option) == (errno.EPERM, 17, ka.Option.COUNT)  # type: ignore[attr-defined]
    assert setting.strerror == f"{ka.errors.strerror(errno.EPERM)} (setting TCP_KEEPCNT on fd 17)"
    assert (
        failure.error("reading").strerror
        == f"{ka.errors.strerror(errno.EPERM)} (reading TCP_KEEPCNT on fd 17)"
    )


def _read(errnos: list[int]) -> ReadResult:
    n = len(errnos)
    column = array.array("i", [1] * n)
    return ReadResult(
        array.array("i", range(20, 20 + n)),
        array.array("i", errnos),
        array.array("B", [ka.Option.KEEPALIVE if e else 0 for e in errnos]),
        array.array("b", [1] * n),
        column,
        column,
        column,
        array.array("i", [-1] * n),
        sum(1 for e in errnos if e),
    )


def test_a_failed_read_raises_as_a_single_read_would() -> None:
    result = _read([0, errno.EBADF, 0])
    assert repr(result) == "<ReadResult 3 sockets: 2 read, 1 failed>"
    with pytest.raises(OSError) as info:
        result[1]
    assert info.value.strerror == f"{ka.errors.strerror(errno.EBADF)} (reading SO_KEEPALIVE on fd 21)"
    assert (info.value.errno, info.value.fd) == (errno.EBADF, 21)  # type: ignore[attr-defined]
    assert list(result) == [
        KeepAliveSettings(True, 1, 1, 1, None),
        None,
        KeepAliveSettings(True, 1, 1, 1, None),
    ]


def test_settings_of_keeps_one_and_hides_what_the_os_cannot_tell() -> None:
    assert settings_of(Spec(1, 1, 1, 1, 0)) == KeepAliveSettings(True, 1, 1, 1, 0.0)  # 1 s is a value
    # -1 (and 0, which no OS reports for these) is unknown: None, never a number shown as the socket's
    assert settings_of(Spec(1, -1, 0, -1, -1)) == KeepAliveSettings(True, None, None, None, None)
    assert settings_of(Spec(1, 0, -1, 0, -1)) == KeepAliveSettings(True, None, None, None, None)
    assert settings_of(Spec(0, 7200, 75, 9, 1)).user_timeout == 0.001


# --- the Keep-Alive header -------------------------------------------------------------------


class Seconds(enum.IntEnum):
    FIVE = 5


def test_header_get_gives_the_default_for_an_absent_field() -> None:
    empty = parse_keep_alive("")
    assert empty.get("timeout", 30) == 30 and empty.get("MAX", 100) == 100 and empty.get("x", "y") == "y"
    assert empty.get("timeout") is None
    assert parse_keep_alive("timeout=0").get("timeout", 30) == 0  # present, though false


def test_whole_numbers_of_any_integer_type_become_plain_ints() -> None:
    np = pytest.importorskip("numpy")
    for value in (Seconds.FIVE, np.int64(5), np.uint8(5)):
        header = KeepAliveHeader(timeout=value, max=value)
        assert type(header.timeout) is int and type(header.max) is int, type(value)
        assert header == KeepAliveHeader(5, 5) and str(header) == "timeout=5, max=5"
        assert format_keep_alive(value, value, n=value) == "timeout=5, max=5, n=5"
    json.dumps({"timeout": KeepAliveHeader(timeout=np.int32(7)).timeout})  # a plain int: JSON takes it
    for bad in (True, np.bool_(True), 5.0):
        with pytest.raises(
            TypeError, match=f"timeout must be a whole number of seconds \\(int\\), not {type(bad).__name__}"
        ):
            H.KeepAliveHeader(timeout=bad)
    with pytest.raises(TypeError, match=exact("Keep-Alive parameter 'n' must be str or int, not bool True")):
        format_keep_alive(n=True)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: H.parse_keep_alive(5),
            TypeError,
            "the Keep-Alive header value must be str, bytes or an iterable of them (one per header line), "
            "not int 5",
        ),
        (
            lambda: H.parse_connection(5),
            TypeError,
            "the Connection header value must be str, bytes or an iterable of them (one per header line), "
            "not int 5",
        ),
        (
            lambda: H.parse_connection(["close", 7]),
            TypeError,
            "Connection header line #1 must be str or bytes, not int 7",
        ),
        (
            lambda: parse_connection("a, b c", strict=True),
            ka.http.HeaderError,
            "Malformed Connection header: 'b c' is not a connection option (an HTTP token).",
        ),
        (
            lambda: H.format_keep_alive(foo=1.5),
            TypeError,
            "Keep-Alive parameter 'foo' must be str or int, not float 1.5",
        ),
        (
            lambda: format_keep_alive(foo="a\nb"),
            ValueError,
            "Keep-Alive parameter 'foo' value 'a\\nb' contains '\\n', which a header value cannot carry "
            "(only tab, printable ASCII and \\x80-\\xff)",
        ),
        (lambda: H.KeepAliveHeader(skipped=[5]), TypeError, "a skipped part must be str or bytes, not int 5"),
        (
            lambda: KeepAliveHeader(max=-1),
            ValueError,
            "max=-1 is out of range: max takes 0 to 2147483648 requests",
        ),
    ],
)
def test_header_errors_name_the_header_and_the_value(
    call: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=exact(message)):
        call()  # type: ignore[operator]


def test_skipped_parts_are_kept_as_text() -> None:
    header = H.KeepAliveHeader(timeout=5, skipped=[b"junk", "x y"])
    assert header.skipped == ("junk", "x y")
    assert parse_keep_alive("timeout=5, junk").skipped == ("junk",)


# --- policies and strings --------------------------------------------------------------------


def test_a_policy_cannot_lose_a_field() -> None:
    policy = ka.KeepAlive(30, 5, 3)
    with pytest.raises(AttributeError, match=exact("KeepAlive is immutable: cannot delete 'idle'")):
        del policy.idle


def test_detection_time_needs_every_field_or_defaults() -> None:
    assert ka.KeepAlive(interval=10, count=5).detection_time_with(None) is None
    assert ka.KeepAlive(idle=10, count=5).detection_time_with(None) is None
    defaults = ka.system_defaults()
    assert ka.KeepAlive(interval=10, count=5).detection_time_with(defaults) == defaults.idle + 50


def test_count_is_checked_against_the_policy_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    from ka import _options

    monkeypatch.setattr(ka.policy, "LIMITS", _options.LIMITS_BY_PLATFORM["windows"])
    assert ka.KeepAlive(count=255).count == 255  # Windows takes up to 255 probes, Linux 127


def test_a_too_short_deadline_says_why() -> None:
    with pytest.raises(
        ValueError,
        match=exact(
            "deadline=1 is too short: a dead peer takes at least 2 seconds to find "
            "(1 s idle, then one 1 s probe)"
        ),
    ):
        ka.KeepAlive.within(1)


def test_a_value_with_two_equals_signs_is_a_bad_duration() -> None:
    with pytest.raises(ValueError, match=re.escape("part 'idle=5=3' is not a duration")):
        ka.KeepAlive.parse("idle=5=3")


@pytest.mark.skipif(not CAPS.user_timeout, reason="no user timeout on this platform")
def test_http_idle_timeout_policy_sets_its_user_timeout() -> None:
    policy = ka.KeepAlive.for_http_idle_timeout(60)
    assert (policy.idle, policy.interval, policy.count) == (60, 6, 3)
    assert policy.user_timeout == policy.detection_time == 78.0  # "auto": the detection time
    assert ka.KeepAlive.for_http_idle_timeout(60, user_timeout=20).user_timeout == 20.0
