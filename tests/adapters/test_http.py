"""ka.http: Keep-Alive and Connection headers, RFC 9112 persistence, policies for HTTP and middleboxes."""

from __future__ import annotations

import contextlib
import datetime
import email.message
import http.client
import http.server
import io
import math
import pickle
import socket
import string
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import ka
from helpers import kernel_values
from ka._options import LIMITS
from ka.http import (
    DELTA_SECONDS_MAX,
    ConnectionDecision,
    HeaderError,
    KeepAliveHeader,
    decide_connection,
    format_keep_alive,
    is_persistent,
    parse_connection,
    parse_keep_alive,
    policy_for_http_idle_timeout,
    policy_for_middlebox,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROPS = settings(max_examples=150, deadline=None)

TCHARS = "!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters
VALUE_CHARS = "\t" + "".join(map(chr, range(0x20, 0x7F))) + "".join(map(chr, range(0x80, 0x100)))


# -- Keep-Alive: examples ----------------------------------------------------------------------


def test_seed_article_example() -> None:
    # The seed article's header, as Apache and MDN show it too.
    h = parse_keep_alive("timeout=5, max=1000")
    assert (h.timeout, h.max, h.extensions, h.skipped) == (5, 1000, (), ())
    assert str(h) == "timeout=5, max=1000"
    assert format_keep_alive(timeout=5, max=1000) == "timeout=5, max=1000"


@pytest.mark.parametrize(
    ("value", "timeout", "maximum", "extensions"),
    [
        ("timeout=5", 5, None, ()),
        ("max=100", None, 100, ()),
        ("", None, None, ()),
        ("Timeout=5, MAX=100", 5, 100, ()),  # names are case-insensitive
        ("timeout=5,max=100", 5, 100, ()),
        (" \ttimeout=5 \t,\t max=100 ", 5, 100, ()),  # OWS around commas
        (", ,timeout=5,, ,max=100,", 5, 100, ()),  # empty list elements (RFC 9110 5.6.1)
        ('timeout="5", max="100"', 5, 100, ()),  # quoted and token forms are equivalent
        ("timeout=0", 0, None, ()),
        ("timeout=007", 7, None, ()),
        ("timeout=5, x-foo=bar", 5, None, (("x-foo", "bar"),)),
        ('X-Foo="a, b; c=d"', None, None, (("x-foo", "a, b; c=d"),)),  # a comma inside quotes
        (r'note="say \"hi\" \\o/"', None, None, (("note", 'say "hi" \\o/'),)),
        ('e=""', None, None, (("e", ""),)),
        ("timeout=5,\r\n max=9", 5, 9, ()),  # obs-fold unfolded (RFC 9112 5.2)
        ('x="a\r\n\tb"', None, None, (("x", "a b"),)),
        (["timeout=5", "max=100"], 5, 100, ()),  # two header lines
        ((b"timeout=5", bytearray(b"max=100")), 5, 100, ()),
        (b'n="caf\xe9"', None, None, (("n", "caf\xe9"),)),  # obs-text in a quoted string
    ],
)
def test_parse_valid(
    value: Any, timeout: int | None, maximum: int | None, extensions: tuple[Any, ...]
) -> None:
    for strict in (False, True):
        h = parse_keep_alive(value, strict=strict)
        assert (h.timeout, h.max, h.extensions, h.skipped) == (timeout, maximum, extensions, ())


@pytest.mark.parametrize(
    ("value", "timeout", "maximum", "skipped"),
    [
        ("timeout=-5, max=10", None, 10, ("timeout=-5",)),
        ("timeout=5.5", None, None, ("timeout=5.5",)),
        ("timeout=, max=3", None, 3, ("timeout=",)),
        ("timeout", None, None, ("timeout",)),
        ("=5", None, None, ("=5",)),
        ("timeout=5 max=10", None, None, ("timeout=5 max=10",)),  # a missing comma
        ("timeout=5; max=10", None, None, ("timeout=5; max=10",)),
        ("timeout=abc, timeout=7", 7, None, ("timeout=abc",)),  # the first valid one counts
        ("timeout=5, timeout=7, TIMEOUT=8", 5, None, ("timeout=7", "TIMEOUT=8")),
        ("max=1, max=1", None, 1, ("max=1",)),
        ("timeout=\u0665", None, None, ("timeout=\u0665",)),  # a non-ASCII digit
        ("t\u00e9=1, max=2", None, 2, ("t\u00e9=1",)),
        ('x="unterminated, max=2', None, None, ('x="unterminated, max=2',)),
        ("x=\x00, timeout=1", 1, None, ("x=\x00",)),
        ("x=a\nb, timeout=1", 1, None, ("x=a\nb",)),  # a bare line feed is no obs-fold
    ],
)
def test_lenient_skips_malformed_parts(
    value: str, timeout: int | None, maximum: int | None, skipped: tuple[str, ...]
) -> None:
    h = parse_keep_alive(value)
    assert (h.timeout, h.max, h.skipped) == (timeout, maximum, skipped)
    with pytest.raises(HeaderError) as info:
        parse_keep_alive(value, strict=True)
    assert info.value.field == "Keep-Alive"
    assert info.value.part == skipped[0]
    assert repr(info.value.part) in str(info.value)


def test_whitespace_around_equals_is_lenient_only() -> None:
    assert parse_keep_alive("timeout = 5 , max =\t6") == KeepAliveHeader(5, 6)
    with pytest.raises(HeaderError, match=r"'timeout = 5'.*no spaces|'timeout = 5'.*without spaces"):
        parse_keep_alive("timeout = 5", strict=True)


def test_strict_errors_name_the_part_and_the_problem() -> None:
    with pytest.raises(HeaderError) as info:
        parse_keep_alive("timeout=5, max=ten", strict=True)
    assert str(info.value) == (
        "Malformed Keep-Alive header: 'max=ten' has a max that is not a whole number of requests "
        "(digits only)."
    )
    assert (info.value.field, info.value.part) == ("Keep-Alive", "max=ten")
    assert isinstance(info.value, ValueError)
    with pytest.raises(
        HeaderError, match=r"'Timeout=6' repeats the parameter 'timeout' \(first given as 'timeout=5'\)"
    ):
        parse_keep_alive("timeout=5, Timeout=6", strict=True)
    copy = pickle.loads(pickle.dumps(info.value))
    assert (type(copy), str(copy), copy.part) == (HeaderError, str(info.value), "max=ten")


@pytest.mark.parametrize(
    ("digits", "expected"),
    [
        ("2147483647", 2147483647),
        ("2147483648", DELTA_SECONDS_MAX),
        ("2147483649", DELTA_SECONDS_MAX),
        ("99999999999", DELTA_SECONDS_MAX),
        ("9" * 100_000, DELTA_SECONDS_MAX),  # beyond int()'s default digit limit
        ("0" * 100_000 + "42", 42),
    ],
)
def test_huge_numbers_clamp_to_2_pow_31(digits: str, expected: int) -> None:
    # RFC 9111 1.2.2: a recipient treats an unrepresentable delta-seconds as 2**31.
    h = parse_keep_alive(f"timeout={digits}, max={digits}", strict=True)
    assert (h.timeout, h.max) == (expected, expected)


def test_wrong_argument_types() -> None:
    with pytest.raises(TypeError, match="Keep-Alive header value must be str, bytes or an iterable"):
        parse_keep_alive(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Keep-Alive header line #1 must be str or bytes, not int"):
        parse_keep_alive(["timeout=5", 7])  # type: ignore[list-item]


# -- Keep-Alive: the object and formatting -----------------------------------------------------


def test_header_object_is_immutable_hashable_and_ignores_skipped_in_equality() -> None:
    a = parse_keep_alive("timeout=5, junk, X=1")
    b = KeepAliveHeader(timeout=5, extensions={"x": "1"})  # type: ignore[arg-type]
    assert a == b and hash(a) == hash(b) and a.skipped == ("junk",)
    with pytest.raises(AttributeError):
        a.timeout = 6  # type: ignore[misc]
    assert a.get("TIMEOUT") == 5 and a.get("x") == "1" and a.get("max") is None
    assert a.get("nope", "default") == "default"
    assert pickle.loads(pickle.dumps(a)) == a


def test_header_object_validates() -> None:
    with pytest.raises(
        ValueError, match=r"timeout=-1 is out of range: timeout takes 0 to 2147483648 seconds"
    ):
        KeepAliveHeader(timeout=-1)
    with pytest.raises(TypeError, match="max must be a whole number of requests"):
        KeepAliveHeader(max=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be given as timeout="):
        KeepAliveHeader(extensions=(("Timeout", "5"),))
    with pytest.raises(ValueError, match="'a' is given twice"):
        KeepAliveHeader(extensions=[("a", "1"), ("A", "2")])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"\(name, value\) pair"):
        KeepAliveHeader(extensions=["a=1"])  # type: ignore[arg-type]


def test_format() -> None:
    assert format_keep_alive() == ""
    assert format_keep_alive(max=3) == "max=3"
    assert format_keep_alive(0, 0) == "timeout=0, max=0"
    params: dict[str, Any] = {"X-Foo": "a b", "n": 3, "e": "", "skip": None}
    assert format_keep_alive(timeout=5, **params) == ('timeout=5, x-foo="a b", n=3, e=""')
    assert format_keep_alive(q='say "hi" \\o/') == r'q="say \"hi\" \\o/"'
    assert format_keep_alive(o="caf\xe9") == 'o="caf\xe9"'


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"timeout": -1}, ValueError, r"timeout=-1 is out of range: timeout takes 0 to 2147483648 seconds"),
        ({"timeout": 2**31 + 1}, ValueError, "out of range"),
        ({"timeout": 2.0}, TypeError, r"timeout must be a whole number of seconds \(int\), not float 2.0"),
        ({"max": True}, TypeError, "max must be a whole number of requests"),
        ({"max": "5"}, TypeError, "not str '5'"),
        ({"bad name": "x"}, ValueError, r"parameter name 'bad name' is not an HTTP token"),
        ({"x": "a\r\nInjected: 1"}, ValueError, r"contains '\\r', which a header value cannot carry"),
        ({"x": "\u4e2d"}, ValueError, "which a header value cannot carry"),
        ({"x": 1.5}, TypeError, "must be str or int, not float"),
        ({"TIMEOUT": 5}, ValueError, "must be given as timeout="),
    ],
)
def test_format_rejects_bad_values(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        format_keep_alive(**kwargs)


# -- Keep-Alive: properties --------------------------------------------------------------------

_header_like = st.text(
    alphabet=st.sampled_from(list('timeoutmaxTIMEOUTMAX=,; \t"\\5907-.\u00e9\x00\r\n\u4e2d'))
)


@FUZZ
@given(
    st.one_of(st.text(), _header_like, st.binary(), st.lists(st.one_of(st.text(), st.binary()), max_size=4))
)
def test_any_text_lenient_returns_and_strict_returns_or_raises_header_error(value: Any) -> None:
    lenient = parse_keep_alive(value)
    assert isinstance(lenient, KeepAliveHeader)
    for n in (lenient.timeout, lenient.max):
        assert n is None or 0 <= n <= DELTA_SECONDS_MAX
    # What str() writes is strictly valid and parses back to the same header.
    assert parse_keep_alive(str(lenient), strict=True) == lenient
    assert parse_keep_alive(str(lenient)).skipped == ()
    try:
        strict = parse_keep_alive(value, strict=True)
    except HeaderError as exc:
        assert exc.field == "Keep-Alive" and exc.part  # noqa: PT017  (either outcome is allowed here)
    else:
        assert strict == lenient and strict.skipped == ()
        assert lenient.skipped == ()
    if lenient.skipped:
        with pytest.raises(HeaderError):
            parse_keep_alive(value, strict=True)


_tokens = st.text(alphabet=st.sampled_from(list(TCHARS)), min_size=1, max_size=12)
_values = st.text(alphabet=st.sampled_from(list(VALUE_CHARS)), max_size=20)
_counts = st.none() | st.integers(0, DELTA_SECONDS_MAX)


@PROPS
@given(_counts, _counts, st.dictionaries(_tokens, _values | st.integers(0, 10**12), max_size=5))
def test_format_parse_round_trip(
    timeout: int | None, maximum: int | None, extensions: dict[str, Any]
) -> None:
    lowered = {k.lower(): v for k, v in extensions.items()}
    assume(len(lowered) == len(extensions) and not set(lowered) & {"timeout", "max"})
    text = format_keep_alive(timeout, maximum, **extensions)
    h = parse_keep_alive(text, strict=True)
    assert h == KeepAliveHeader(timeout, maximum, tuple((k, str(v)) for k, v in lowered.items()))
    assert str(h) == text


@st.composite
def _spelled_headers(draw: st.DrawFn) -> tuple[list[str], int | None, int | None, dict[str, str]]:
    """Valid Keep-Alive lines spelled every legal way: case, quoting, OWS, empty elements, lines."""
    timeout, maximum = draw(_counts), draw(_counts)
    extensions = draw(st.dictionaries(_tokens.map(str.lower), _values, max_size=4))
    assume(not set(extensions) & {"timeout", "max"})
    params = [(n, str(v)) for n, v in (("timeout", timeout), ("max", maximum)) if v is not None]
    params += list(extensions.items())
    params = draw(st.permutations(params))
    elements = []
    for name, value in params:
        spelled = "".join(c.upper() if draw(st.booleans()) else c for c in name)
        if draw(st.booleans()) or not all(c in TCHARS for c in value) or not value:
            value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        elements.append(f"{spelled}={value}")
        elements += [""] * draw(st.integers(0, 1))
    ows = st.sampled_from(["", " ", "\t", " \t "])
    text = ""
    commas = [0]  # where a line may end: at a list comma, never inside a quoted string
    for element in elements:
        text += element + draw(ows)
        commas.append(len(text))
        text += "," + draw(ows)
    cuts = sorted(set(draw(st.lists(st.sampled_from(commas), max_size=2))))
    lines = [text[a:b].lstrip(",") for a, b in zip([0, *cuts], [*cuts, len(text)])]
    return lines, timeout, maximum, extensions


@PROPS
@given(_spelled_headers())
def test_every_legal_spelling_parses_strictly(
    case: tuple[list[str], int | None, int | None, dict[str, str]],
) -> None:
    lines, timeout, maximum, extensions = case
    h = parse_keep_alive(lines, strict=True)
    assert (h.timeout, h.max, dict(h.extensions)) == (timeout, maximum, extensions)


# -- Connection and persistence ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "options"),
    [
        ("close", ("close",)),
        ("Keep-Alive", ("keep-alive",)),
        ("keep-alive, Upgrade", ("keep-alive", "upgrade")),
        # RFC 9110 5.6.1's list examples
        ("foo,bar", ("foo", "bar")),
        ("foo ,bar,", ("foo", "bar")),
        ("foo , ,bar,charlie", ("foo", "bar", "charlie")),
        ("", ()),
        (", ,", ()),
        (["keep-alive", "CLOSE", "Keep-Alive"], ("keep-alive", "close")),
        (b"TE, close", ("te", "close")),
    ],
)
def test_parse_connection(value: Any, options: tuple[str, ...]) -> None:
    assert parse_connection(value) == options
    assert parse_connection(value, strict=True) == options


def test_parse_connection_malformed() -> None:
    assert parse_connection("keep alive, close, x=1, \u00e9") == ("close",)
    with pytest.raises(
        HeaderError, match=r"Malformed Connection header: 'keep alive' is not a connection option"
    ):
        parse_connection("keep alive, close", strict=True)


@FUZZ
@given(st.one_of(st.text(), _header_like, st.binary()), st.sampled_from(["HTTP/1.0", "HTTP/1.1"]))
def test_any_connection_value_gives_options_or_header_error(value: Any, version: str) -> None:
    options = parse_connection(value)
    assert all(o == o.lower() and parse_connection(o, strict=True) == (o,) for o in options)
    assert len(set(options)) == len(options)
    try:
        assert parse_connection(value, strict=True) == options
    except HeaderError as exc:
        assert exc.field == "Connection" and exc.part  # noqa: PT017  (either outcome is allowed here)
    expected = "close" not in options and (version == "HTTP/1.1" or "keep-alive" in options)
    assert is_persistent(version, [("Connection", value)]) is expected


def _message(*pairs: tuple[str, str]) -> email.message.Message:
    raw = "".join(f"{n}: {v}\r\n" for n, v in pairs) + "\r\n"
    return http.client.parse_headers(io.BytesIO(raw.encode("latin-1")))


# (version, Connection header lines, persistent) per RFC 9112 section 9.3
PERSISTENCE = [
    ("HTTP/1.1", [], True),
    ("HTTP/1.1", ["keep-alive"], True),
    ("HTTP/1.1", ["close"], False),
    ("HTTP/1.1", ["Close"], False),
    ("HTTP/1.1", ["upgrade, CLOSE"], False),
    ("HTTP/1.1", ["keep-alive", "close"], False),  # close on any line wins
    ("HTTP/1.1", ["keep-alive, close"], False),
    ("HTTP/1.1", ["upgrade"], True),
    ("HTTP/1.1", ["closed"], True),  # a different option, not close
    ("HTTP/1.1", [""], True),
    ("HTTP/1.0", [], False),
    ("HTTP/1.0", ["keep-alive"], True),
    ("HTTP/1.0", ["Keep-Alive"], True),
    ("HTTP/1.0", ["upgrade", "keep-alive"], True),
    ("HTTP/1.0", ["keep-alive, close"], False),
    ("HTTP/1.0", ["close", "keep-alive"], False),
    ("HTTP/1.0", ["close"], False),
    ("HTTP/1.0", ["upgrade"], False),
    ("HTTP/1.0", ["keepalive"], False),
    ("HTTP/0.9", [], False),
    ("HTTP/0.9", ["keep-alive"], False),
    ("HTTP/1.2", [], True),  # "HTTP/1.1 (or later)"
]


@pytest.mark.parametrize(("version", "lines", "persistent"), PERSISTENCE)
def test_persistence_rules(version: str, lines: list[str], persistent: bool) -> None:
    spellings: list[Any] = [
        [("Connection", line) for line in lines],
        [(b"cOnNeCtIoN", line.encode()) for line in lines] + [(b"Host", b"x")],
        _message(("Host", "x"), *[("Connection", line) for line in lines]),
    ]
    if len(lines) <= 1:
        spellings.append({"Host": "x", **({"connection": lines[0]} if lines else {})})
    versions: list[Any] = [version, version.encode(), version[5:]]
    major, minor = int(version[5]), int(version[7])
    versions.append((major, minor))
    if (major, minor) in ((0, 9), (1, 0), (1, 1)):
        versions.append(major * 10 + minor)  # http.client's numbering
    for headers in spellings:
        for v in versions:
            assert is_persistent(v, headers) is persistent, (v, headers)


@PROPS
@given(
    st.sampled_from(["HTTP/1.0", "HTTP/1.1"]),
    st.lists(
        st.lists(
            st.sampled_from(["close", "Close", "keep-alive", "KEEP-ALIVE", "upgrade", "te", "x"]), max_size=3
        )
    ),
)
def test_persistence_model(version: str, lines: list[list[str]]) -> None:
    options = {o.lower() for line in lines for o in line}
    expected = "close" not in options and (version == "HTTP/1.1" or "keep-alive" in options)
    assert is_persistent(version, [("Connection", ", ".join(line)) for line in lines]) is expected


@pytest.mark.parametrize(
    ("version", "error", "message"),
    [
        ("HTTP/2", ValueError, "is not an HTTP version"),
        ("HTTP/2.0", ValueError, "is HTTP/2: these persistence rules are HTTP/1.x's"),
        ((3, 0), ValueError, "is HTTP/3"),
        ("http/1.1", ValueError, "is not an HTTP version"),  # HTTP-name is case-sensitive
        ("HTTP/1.10", ValueError, "is not an HTTP version"),
        (12, ValueError, "is not an HTTP version"),
        (True, ValueError, "is not an HTTP version"),
        ((1, 1, 0), ValueError, "is not an HTTP version"),
        (1.1, TypeError, "version must be str"),
    ],
)
def test_bad_versions(version: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        is_persistent(version, {})


def test_bad_headers() -> None:
    with pytest.raises(TypeError, match="headers must be a mapping or an iterable of"):
        is_persistent("HTTP/1.1", "Connection: close")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"headers\[1\] must be a \(name, value\) pair"):
        is_persistent("HTTP/1.1", [("Host", "x"), ("Connection",)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"headers\[0\] value must be str or bytes, not list"):
        is_persistent("HTTP/1.1", {"Connection": ["close"]})


@pytest.mark.parametrize(
    ("version", "request_headers", "kwargs", "persistent", "response_headers"),
    [
        ("HTTP/1.1", {}, {}, True, ()),
        (
            "HTTP/1.1",
            {},
            {"timeout": 5, "max": 1000},
            True,
            (("Connection", "keep-alive"), ("Keep-Alive", "timeout=5, max=1000")),
        ),
        ("HTTP/1.1", {"Connection": "close"}, {"timeout": 5}, False, (("Connection", "close"),)),
        ("HTTP/1.1", {}, {"keep_open": False}, False, (("Connection", "close"),)),
        ("HTTP/1.1", {}, {"timeout": 5, "max": 0}, False, (("Connection", "close"),)),
        ("HTTP/1.0", {}, {"timeout": 5}, False, (("Connection", "close"),)),
        ("HTTP/1.0", {"Connection": "Keep-Alive"}, {}, True, (("Connection", "keep-alive"),)),
        (
            "HTTP/1.0",
            {"Connection": "keep-alive"},
            {"timeout": 5, "max": 1000},
            True,
            (("Connection", "keep-alive"), ("Keep-Alive", "timeout=5, max=1000")),
        ),
        ("HTTP/1.0", {"Connection": "keep-alive"}, {"keep_open": False}, False, (("Connection", "close"),)),
        ("HTTP/0.9", {}, {"timeout": 5}, False, ()),
    ],
)
def test_decide_connection(
    version: str,
    request_headers: dict[str, str],
    kwargs: dict[str, Any],
    persistent: bool,
    response_headers: tuple[tuple[str, str], ...],
) -> None:
    decision = decide_connection(version, request_headers, **kwargs)
    assert decision == ConnectionDecision(persistent, response_headers)
    # What the client concludes from the response (HTTP/1.1, or 1.0 echoed to a 1.0 client) agrees.
    if version != "HTTP/0.9":
        assert is_persistent("HTTP/1.1", list(decision.headers)) is persistent
    if version == "HTTP/1.0":
        assert is_persistent("HTTP/1.0", list(decision.headers)) is persistent


def test_decide_connection_validates_whatever_the_outcome() -> None:
    with pytest.raises(ValueError, match="timeout=-5 is out of range"):
        decide_connection("HTTP/1.1", {"Connection": "close"}, timeout=-5)
    with pytest.raises(TypeError, match="keep_open must be True or False, not int 1"):
        decide_connection("HTTP/1.1", {}, keep_open=1)  # type: ignore[arg-type]


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
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    with client, accepted:
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


# -- end to end: a real HTTP/1.1 server on loopback --------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    policy: ka.KeepAlive
    requests_per_connection: int
    kernel: list[tuple[int, int, int, int, int]]
    errors: list[BaseException]

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        if exc is not None:
            self.errors.append(exc)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.idle_timeout = self.timeout  # the HTTP idle timeout, enforced by the socket timeout
        ka.apply(self.connection, self.server.policy)
        self.server.kernel.append(kernel_values(self.connection))
        self.requests_left = self.server.requests_per_connection

    def do_GET(self) -> None:
        self.requests_left -= 1
        assert self.idle_timeout is not None
        decision = decide_connection(
            self.request_version, self.headers, timeout=int(self.idle_timeout), max=self.requests_left
        )
        body = str(self.client_address[1]).encode()
        self.send_response(200)
        for name, value in decision.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = not decision.persistent

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _serving(idle_timeout: int) -> Iterator[_Server]:
    """A ThreadingHTTPServer on loopback that closes connections idle for ``idle_timeout`` s."""
    handler = type("Handler", (_Handler,), {"timeout": idle_timeout})
    server = _Server(("127.0.0.1", 0), handler)
    server.policy = policy_for_http_idle_timeout(idle_timeout)
    server.requests_per_connection = 2
    server.kernel = []
    server.errors = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert server.errors == []


@pytest.fixture
def http_server() -> Iterator[_Server]:
    with _serving(3) as server:
        yield server


class _RawClient:
    """An HTTP client on a bare socket: bytes in, (status, header pairs, body) out."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=10)
        self.buffer = b""

    def request(self, version: str, *extra: str) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
        lines = [f"GET / {version}", "Host: 127.0.0.1", *extra, "", ""]
        self.sock.sendall("\r\n".join(lines).encode())
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status, *header_lines = head.split(b"\r\n")
        pairs = [(n.strip(), v.strip()) for n, v in (line.split(b":", 1) for line in header_lines)]
        length = int(next(v for n, v in pairs if n.lower() == b"content-length"))
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, pairs, body

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, "the server closed the connection mid-response"
        self.buffer += chunk

    def closed_by_server(self) -> bool:
        return self.buffer == b"" and self.sock.recv(1) == b""

    def close(self) -> None:
        self.sock.close()


def _keep_alive(pairs: list[tuple[bytes, bytes]]) -> KeepAliveHeader:
    return parse_keep_alive([v for n, v in pairs if n.lower() == b"keep-alive"], strict=True)


@pytest.mark.parametrize(("version", "extra"), [("HTTP/1.1", ()), ("HTTP/1.0", ("Connection: keep-alive",))])
def test_end_to_end_keep_alive(
    http_server: _Server, version: str, extra: tuple[str, ...]
) -> None:
    client = _RawClient(http_server.server_address[:2])  # type: ignore[arg-type]
    try:
        port = str(client.sock.getsockname()[1]).encode()

        status, pairs, body = client.request(version, *extra)
        assert status == b"HTTP/1.1 200 OK" and body == port
        assert _keep_alive(pairs) == KeepAliveHeader(timeout=3, max=1)
        assert is_persistent("HTTP/1.1", pairs)

        # The same connection carries the second request: the server saw the same client port.
        status, pairs, body = client.request(version, *extra)
        assert status == b"HTTP/1.1 200 OK" and body == port
        assert _keep_alive(pairs) == KeepAliveHeader()  # max was used up: no Keep-Alive, but close
        assert parse_connection([v for n, v in pairs if n.lower() == b"connection"]) == ("close",)
        assert not is_persistent("HTTP/1.1", pairs)
        assert client.closed_by_server()
    finally:
        client.close()

    # One connection, and the kernel holds the policy derived from the advertised timeout.
    policy = http_server.policy
    assert len(http_server.kernel) == 1
    enabled, idle, interval, count, user_ms = http_server.kernel[0]
    assert (enabled, idle, interval, count) == (1, 3, 1, 3) == (1, policy.idle, policy.interval, policy.count)
    if policy.user_timeout_ms is not None:
        assert user_ms == policy.user_timeout_ms == 6000


def test_end_to_end_http10_without_keep_alive_is_closed(http_server: _Server) -> None:
    client = _RawClient(http_server.server_address[:2])  # type: ignore[arg-type]
    try:
        _, pairs, _ = client.request("HTTP/1.0")
        assert not is_persistent("HTTP/1.0", pairs)
        assert (b"Connection", b"close") in pairs
        assert client.closed_by_server()
    finally:
        client.close()


def test_end_to_end_idle_connection_is_closed_by_the_server() -> None:
    # The advertised timeout is real: an idle persistent connection is closed by the server.
    with _serving(1) as server:
        client = _RawClient(server.server_address[:2])  # type: ignore[arg-type]
        try:
            _, pairs, _ = client.request("HTTP/1.1")
            timeout = _keep_alive(pairs).timeout
            assert timeout == 1 and is_persistent("HTTP/1.1", pairs)
            client.sock.settimeout(timeout + 10)
            assert client.closed_by_server()
        finally:
            client.close()
