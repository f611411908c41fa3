"""The grammar of the ``Keep-Alive`` and ``Connection`` header values (RFC 9110, RFC 9112).

Parsing is lenient by default (malformed parts are skipped and reported, never raised);
``strict=True`` raises ``HeaderError`` naming the offending part. The public names are
re-exported by ``ka.http``.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

__all__ = [
    "DELTA_SECONDS_MAX",
    "HeaderError",
    "HeaderValue",
    "KeepAliveHeader",
    "Text",
    "format_keep_alive",
    "header_text",
    "parse_connection",
    "parse_keep_alive",
]


Text = Union[str, bytes, bytearray]
HeaderValue = Union[Text, Iterable[Text]]

#: The largest number a Keep-Alive ``timeout`` or ``max`` keeps; larger ones are clamped to it,
#: as RFC 9111 section 1.2.2 tells recipients of delta-seconds to do.
DELTA_SECONDS_MAX = 2**31

_TCHAR = r"!#$%&'*+.^_`|~0-9A-Za-z-"
_TOKEN = f"[{_TCHAR}]+"
# RFC 9110 5.6.4: qdtext and quoted-pair; obs-text is %x80-FF.
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_TOKEN_RE = re.compile(_TOKEN)
_STRICT_PARAM = re.compile(f"({_TOKEN})=({_TOKEN}|{_QUOTED})")
_LENIENT_PARAM = re.compile(f"({_TOKEN})[ \t]*=[ \t]*({_TOKEN}|{_QUOTED})")
_DIGITS = re.compile("[0-9]+")
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_NEEDS_ESCAPE = re.compile(r'(["\\])')
_VALUE_CHARS = re.compile("[\t\x20-\x7e\x80-\xff]*")
_OBS_FOLD = re.compile("\r?\n[ \t]+")  # RFC 9112 5.2: a recipient may replace obs-fold with SP
_OWS = " \t"
_RESERVED = ("timeout", "max")


class HeaderError(ValueError):
    """A header value that does not follow its grammar (raised by the ``strict=True`` parsers).

    ``field`` is the header's name, ``part`` the offending text, ``reason`` what is wrong with it.
    """

    field: str
    part: str
    reason: str

    def __init__(self, field: str, part: str, reason: str) -> None:
        super().__init__(f"Malformed {field} header: {part!r} {reason}.")
        self.field = field
        self.part = part
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.field, self.part, self.reason))


# -- header values -----------------------------------------------------------------------------


def header_text(value: object, what: str) -> str:
    """A header name or value as text: str as is, bytes decoded as ISO-8859-1 (what HTTP carries)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__} {value!r}")


def _joined(value: object, header: str) -> str:
    """One field value from a str/bytes or an iterable of header lines, obs-folds unfolded."""
    if isinstance(value, (str, bytes, bytearray)):
        text = header_text(value, f"the {header} header value")
    else:
        try:
            lines = list(value)  # type: ignore[call-overload]
        except TypeError:
            raise TypeError(
                f"the {header} header value must be str, bytes or an iterable of them (one per "
                f"header line), not {type(value).__name__} {value!r}"
            ) from None
        text = ", ".join(header_text(line, f"{header} header line #{i}") for i, line in enumerate(lines))
    return _OBS_FOLD.sub(" ", text)


def _split_list(text: str) -> list[str]:
    """RFC 9110 5.6.1 list elements: split at commas outside quoted strings, OWS trimmed."""
    parts = []
    start = 0
    quoted = False
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1  # the escaped character cannot end the string
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == ",":
            parts.append(text[start:i].strip(_OWS))
            start = i + 1
        i += 1
    parts.append(text[start:].strip(_OWS))
    return parts


def _delta_seconds(text: str) -> int | None:
    """1*DIGIT as an int clamped to 2**31, or None; never builds a huge int."""
    if not _DIGITS.fullmatch(text):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > 10:
        return DELTA_SECONDS_MAX
    return min(int(digits), DELTA_SECONDS_MAX)


def _unquote(value: str) -> str:
    if value.startswith('"'):
        return _QUOTED_PAIR.sub(r"\1", value[1:-1])
    return value


def _quote(value: str) -> str:
    """A parameter value as a token where it is one, else as a quoted-string."""
    if _TOKEN_RE.fullmatch(value):
        return value
    return '"' + _NEEDS_ESCAPE.sub(r"\\\1", value) + '"'


# -- Keep-Alive --------------------------------------------------------------------------------


def _check_number(name: str, value: object, unit: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be a whole number of {unit} (int), not {type(value).__name__} {value!r}"
        )
    number = int(value)
    if not 0 <= number <= DELTA_SECONDS_MAX:
        raise ValueError(f"{name}={value!r} is out of range: {name} takes 0 to {DELTA_SECONDS_MAX} {unit}")
    return number


def _check_param_name(name: object) -> str:
    if not isinstance(name, str) or not _TOKEN_RE.fullmatch(name):
        raise ValueError(
            f"Keep-Alive parameter name {name!r} is not an HTTP token (letters, digits and "
            f"!#$%&'*+-.^_`|~; RFC 9110 section 5.6.2)"
        )
    return name.lower()


def _check_param_value(name: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)):
        raise TypeError(
            f"Keep-Alive parameter {name!r} must be str or int, not {type(value).__name__} {value!r}"
        )
    text = value if isinstance(value, str) else str(int(value))
    if not _VALUE_CHARS.fullmatch(text):
        bad = next(c for c in text if not _VALUE_CHARS.fullmatch(c))
        raise ValueError(
            f"Keep-Alive parameter {name!r} value {text!r} contains {bad!r}, which a header value "
            "cannot carry (only tab, printable ASCII and \\x80-\\xff)"
        )
    return text


def _extensions(items: object) -> tuple[tuple[str, str], ...]:
    pairs: Iterable[Any]
    if isinstance(items, Mapping):
        pairs = items.items()
    elif isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise TypeError(
            "extensions must be a mapping or an iterable of (name, value) pairs, "
            f"not {type(items).__name__} {items!r}"
        )
    else:
        pairs = items
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(f"each Keep-Alive extension must be a (name, value) pair, not {pair!r}")
        name = _check_param_name(pair[0])
        if name in _RESERVED:
            raise ValueError(
                f"Keep-Alive parameter {pair[0]!r} must be given as {name}=, not as an extension"
            )
        if name in seen:
            raise ValueError(f"Keep-Alive parameter {name!r} is given twice (names are case-insensitive)")
        seen.add(name)
        out.append((name, _check_param_value(name, pair[1])))
    return tuple(out)


@dataclass(frozen=True)
class KeepAliveHeader:
    """A parsed ``Keep-Alive`` header: immutable, hashable, ``str()`` gives the header value.

    ``timeout``: seconds the sender keeps an idle connection open, or None. ``max``: how many more
    requests it accepts on the connection, or None. Both are 0 to ``DELTA_SECONDS_MAX``.
    ``extensions``: any other parameters as (lowercase name, unquoted value) pairs, in order.
    ``skipped``: the parts a lenient parse ignored (not part of equality).
    """

    timeout: int | None = None
    max: int | None = None
    extensions: tuple[tuple[str, str], ...] = ()
    skipped: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.timeout is not None:
            set_(self, "timeout", _check_number("timeout", self.timeout, "seconds"))
        if self.max is not None:
            set_(self, "max", _check_number("max", self.max, "requests"))
        set_(self, "extensions", _extensions(self.extensions))
        set_(self, "skipped", tuple(header_text(s, "a skipped part") for s in self.skipped))

    def get(self, name: str, default: Any = None) -> Any:
        """A parameter by case-insensitive name: ``timeout``/``max`` as int, others as str."""
        key = name.lower()
        if key in _RESERVED:
            value = self.timeout if key == "timeout" else self.max
            return default if value is None else value
        for ext_name, ext_value in self.extensions:
            if ext_name == key:
                return ext_value
        return default

    def __str__(self) -> str:
        return format_keep_alive(self.timeout, self.max, **dict(self.extensions))


def parse_keep_alive(value: HeaderValue, *, strict: bool = False) -> KeepAliveHeader:
    """Parse a ``Keep-Alive`` header value such as ``timeout=5, max=1000``.

    Grammar (RFC 2068 section 19.7.1.1 with RFC 9110 lists): comma-separated ``name=value``
    parameters, the value a token or a quoted-string (equivalent forms, so ``timeout="5"`` is 5);
    names are case-insensitive; empty list elements and OWS around commas are allowed.
    ``timeout`` and ``max`` take 1*DIGIT; numbers above ``DELTA_SECONDS_MAX`` are clamped to it.

    Lenient (default): whitespace around ``=`` is tolerated; a part that is not ``name=value``,
    a non-numeric ``timeout``/``max``, and a repeat of a name already taken are skipped and
    listed in ``.skipped``; the result is always a ``KeepAliveHeader``. ``strict=True`` raises
    ``HeaderError`` naming the first such part instead. Wrong argument types are a ``TypeError``.
    """
    text = _joined(value, "Keep-Alive")
    param = _STRICT_PARAM if strict else _LENIENT_PARAM
    found: dict[str, str] = {}
    numbers_: dict[str, int] = {}
    extensions: list[tuple[str, str]] = []
    skipped: list[str] = []
    for part in _split_list(text):
        if not part:
            continue
        match = param.fullmatch(part)
        if match is None:
            if strict:
                raise HeaderError(
                    "Keep-Alive",
                    part,
                    "is not a name=value parameter (a token name, '=' without spaces around it, "
                    "and a token or quoted-string value)",
                )
            skipped.append(part)
            continue
        name = match.group(1).lower()
        raw = _unquote(match.group(2))
        if name in found:
            if strict:
                reason = f"repeats the parameter {name!r} (first given as {found[name]!r})"
                raise HeaderError("Keep-Alive", part, reason)
            skipped.append(part)
            continue
        if name in _RESERVED:
            number = _delta_seconds(raw)
            if number is None:
                if strict:
                    unit = "seconds" if name == "timeout" else "requests"
                    reason = f"has a {name} that is not a whole number of {unit} (digits only)"
                    raise HeaderError("Keep-Alive", part, reason)
                skipped.append(part)
                continue
            numbers_[name] = number
        else:
            extensions.append((name, raw))
        found[name] = part
    return KeepAliveHeader(numbers_.get("timeout"), numbers_.get("max"), tuple(extensions), tuple(skipped))


def format_keep_alive(timeout: int | None = None, max: int | None = None, **params: str | int | None) -> str:
    """A ``Keep-Alive`` header value: ``format_keep_alive(5, 1000)`` gives ``'timeout=5, max=1000'``.

    ``timeout`` (seconds) and ``max`` (requests) are ints from 0 to ``DELTA_SECONDS_MAX``; other
    parameters (``**{"name": value}``) take str or int values, quoted where they are not tokens.
    Names are written in lowercase; a None value leaves the parameter out. Bad values raise
    ``TypeError``/``ValueError`` naming them.
    """
    parts = []
    if timeout is not None:
        parts.append(f"timeout={_check_number('timeout', timeout, 'seconds')}")
    if max is not None:
        parts.append(f"max={_check_number('max', max, 'requests')}")
    given = {name: value for name, value in params.items() if value is not None}
    for name, text in _extensions(given):
        parts.append(f"{name}={_quote(text)}")
    return ", ".join(parts)


# -- Connection ----------------------------------------------------------------


def parse_connection(value: HeaderValue, *, strict: bool = False) -> tuple[str, ...]:
    """The options of a ``Connection`` header, lowercased, in order, without repeats.

    ``Connection: Keep-Alive, Upgrade`` gives ``('keep-alive', 'upgrade')``. Options are tokens
    (RFC 9110 section 7.6.1), case-insensitive. Lenient (default): elements that are not tokens
    are skipped; ``strict=True`` raises ``HeaderError`` naming the first one.
    """
    options: list[str] = []
    for part in _split_list(_joined(value, "Connection")):
        if not part:
            continue
        if not _TOKEN_RE.fullmatch(part):
            if strict:
                raise HeaderError("Connection", part, "is not a connection option (an HTTP token)")
            continue
        option = part.lower()
        if option not in options:
            options.append(option)
    return tuple(options)
