"""ka.http: the Connection header, RFC 9112 persistence and decide_connection."""

from __future__ import annotations

import email.message
import http.client
import http.server
import io
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from http_strategies import FUZZ, HEADER_LIKE, PROPS
from ka.http import (
    ConnectionDecision,
    HeaderError,
    decide_connection,
    is_persistent,
    parse_connection,
)

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
@given(st.one_of(st.text(), HEADER_LIKE, st.binary()), st.sampled_from(["HTTP/1.0", "HTTP/1.1"]))
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
