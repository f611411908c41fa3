"""ka.http: the Keep-Alive header: parsing (strict and lenient), the header object, formatting."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from http_strategies import FUZZ, HEADER_LIKE, PROPS, TCHARS, VALUE_CHARS
from ka.http import (
    DELTA_SECONDS_MAX,
    HeaderError,
    KeepAliveHeader,
    format_keep_alive,
    parse_keep_alive,
)

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


@FUZZ
@given(
    st.one_of(st.text(), HEADER_LIKE, st.binary(), st.lists(st.one_of(st.text(), st.binary()), max_size=4))
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
