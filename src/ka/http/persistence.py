"""HTTP/1.x connection persistence (RFC 9112 section 9.3): does a message keep its connection
open, and what does a server answer to keep or close it. Re-exported by ``ka.http``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, Protocol, Union

from .grammar import Text, format_keep_alive, header_text, parse_connection

__all__ = ["ConnectionDecision", "HTTPVersion", "Headers", "decide_connection", "is_persistent"]


class _MultiHeaders(Protocol):
    """Headers that keep every line of a field: ``http.client.HTTPMessage``, ``email.message.Message``."""

    def get_all(self, name: str) -> Any: ...


Headers = Union[Mapping[Any, Any], _MultiHeaders, Iterable[tuple[Text, Text]]]
HTTPVersion = Union[str, bytes, int, tuple[int, int]]

_VERSION = re.compile(r"(?:HTTP/)?([0-9])\.([0-9])")


def _field_lines(headers: Headers, name: str) -> list[Text]:
    """Every value of the field ``name`` (lowercase), matched case-insensitively, in order."""
    get_all = getattr(headers, "get_all", None)  # http.client.HTTPMessage, email.message.Message
    if callable(get_all) and not isinstance(headers, Mapping):
        # email's Header objects (undecodable values) become their text
        return [v if isinstance(v, (str, bytes, bytearray)) else str(v) for v in get_all(name) or []]
    pairs: Iterable[Any]
    if isinstance(headers, Mapping):
        pairs = headers.items()  # a multidict's items() holds every line
    elif isinstance(headers, (str, bytes, bytearray)) or not isinstance(headers, Iterable):
        raise TypeError(
            "headers must be a mapping or an iterable of (name, value) pairs, "
            f"not {type(headers).__name__} {headers!r}"
        )
    else:
        pairs = headers
    lines: list[Text] = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(f"headers[{i}] must be a (name, value) pair, not {pair!r}")
        if header_text(pair[0], f"headers[{i}] name").lower() == name:
            value = pair[1]
            if not isinstance(value, (str, bytes, bytearray)):
                raise TypeError(
                    f"headers[{i}] value must be str or bytes, not {type(value).__name__} {value!r}"
                )
            lines.append(value)
    return lines


def _version(version: object) -> tuple[int, int]:
    """(major, minor) of an HTTP/1.x or HTTP/0.9 version."""
    parsed: tuple[int, int] | None = None
    if isinstance(version, bool):
        parsed = None
    elif isinstance(version, int):
        parsed = {9: (0, 9), 10: (1, 0), 11: (1, 1)}.get(version)  # http.client's numbering
    elif isinstance(version, tuple):
        if len(version) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 9 for v in version
        ):
            parsed = (version[0], version[1])
    elif isinstance(version, (str, bytes, bytearray)):
        match = _VERSION.fullmatch(header_text(version, "version"))
        if match:
            parsed = (int(match.group(1)), int(match.group(2)))
    else:
        raise TypeError(
            "version must be str ('HTTP/1.1'), bytes, an int (11, as http.client gives it) or a "
            f"tuple (1, 1), not {type(version).__name__} {version!r}"
        )
    if parsed is None:
        raise ValueError(
            f"version {version!r} is not an HTTP version: expected e.g. 'HTTP/1.1', '1.0', 11 or (1, 1)"
        )
    if parsed[0] >= 2:
        raise ValueError(
            f"version {version!r} is HTTP/{parsed[0]}: these persistence rules are HTTP/1.x's "
            "(RFC 9112); HTTP/2 and HTTP/3 have no Connection header"
        )
    return parsed


def is_persistent(version: HTTPVersion, headers: Headers) -> bool:
    """Whether the connection stays open after this message, by RFC 9112 section 9.3.

    ``version``: the message's HTTP version (``'HTTP/1.1'``, ``'1.0'``, ``11``, ``(1, 0)``).
    ``headers``: a mapping (names case-insensitive; ``http.client.HTTPMessage`` and multidicts
    keep every line) or an iterable of (name, value) pairs. A ``close`` option means no; else
    HTTP/1.1 and later persist; HTTP/1.0 persists only with the ``keep-alive`` option; HTTP/0.9
    never. Connection options are parsed leniently. Not covered: a proxy must not honour an
    HTTP/1.0 request's ``keep-alive``, and a message whose body ends at close cannot persist.
    """
    major_minor = _version(version)
    lines = _field_lines(headers, "connection")
    options = parse_connection(lines) if lines else ()
    if "close" in options:
        return False
    if major_minor >= (1, 1):
        return True
    if major_minor == (1, 0):
        return "keep-alive" in options
    return False


class ConnectionDecision(NamedTuple):
    """``persistent``: whether the server keeps the connection after the response.
    ``headers``: the (name, value) pairs the response carries to say so."""

    persistent: bool
    headers: tuple[tuple[str, str], ...]


def decide_connection(
    request_version: HTTPVersion,
    request_headers: Headers,
    *,
    keep_open: bool = True,
    timeout: int | None = None,
    max: int | None = None,
) -> ConnectionDecision:
    """What a server answers to keep (or close) the connection a request came on.

    The connection persists when the request allows it (``is_persistent``), ``keep_open`` is
    True and ``max`` (requests still accepted after this one) is not 0. Then HTTP/1.0 clients
    get ``Connection: keep-alive``; ``timeout``/``max`` add ``Keep-Alive: timeout=.., max=..``
    (with ``Connection: keep-alive``, which marks it hop-by-hop, for HTTP/1.1 too). Otherwise
    the response carries ``Connection: close`` (RFC 9112 section 9.6); HTTP/0.9 gets no headers.
    The response must still have a self-delimited length (Content-Length, or chunked for 1.1).
    """
    if not isinstance(keep_open, bool):
        raise TypeError(f"keep_open must be True or False, not {type(keep_open).__name__} {keep_open!r}")
    keep_alive = format_keep_alive(timeout, max)  # validated whatever the outcome
    major_minor = _version(request_version)
    if major_minor < (1, 0):
        return ConnectionDecision(False, ())
    persistent = keep_open and max != 0 and is_persistent(request_version, request_headers)
    if not persistent:
        return ConnectionDecision(False, (("Connection", "close"),))
    headers: list[tuple[str, str]] = []
    if major_minor == (1, 0) or keep_alive:
        headers.append(("Connection", "keep-alive"))
    if keep_alive:
        headers.append(("Keep-Alive", keep_alive))
    return ConnectionDecision(True, tuple(headers))
