"""Durations as people type them: ``60``, ``1.5``, ``90s``, ``2m``, ``1h30m``, ``500ms``.

The one reader of that syntax: the ``ka`` command's flags and ``KeepAlive.parse`` (``KA_POLICY``)
both use it. A leaf module: it imports nothing from ka.
"""

from __future__ import annotations

import re

__all__ = ["UNITS", "format_seconds", "parse_duration"]

UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)")


def parse_duration(text: str, name: str) -> float:
    """Seconds from ``60``, ``1.5``, ``90s``, ``2m``, ``1h30m``, ``500ms`` (a bare number is seconds).

    Units: ms, s (sec), m (min), h, d; several may follow each other (``1h30m``), a bare number only
    alone. ``name`` is the field or flag the text was given for; a ``ValueError`` names it.
    """
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a duration as text, not {type(text).__name__} {text!r}")
    raw = text.strip().lower()
    pos, total = 0, 0.0
    while pos < len(raw):
        match = _PART.match(raw, pos)
        if match is None or match.group(2) not in ("", *UNITS) or (match.group(2) == "" and pos):
            raise ValueError(
                f"{name} {text!r} is not a duration: expected seconds (60, 1.5) or a number with "
                "a unit (500ms, 90s, 2m, 1h30m)"
            )
        total += float(match.group(1)) * UNITS.get(match.group(2), 1.0)
        pos = match.end()
        while pos < len(raw) and raw[pos] == " ":
            pos += 1
    if not raw:
        raise ValueError(f"{name} is empty: expected a duration such as 60 or 2m")
    return total


def format_seconds(seconds: float) -> str:
    """Seconds as ``parse_duration`` reads them back exactly: ``60``, ``12.345``."""
    value = float(seconds)
    return str(int(value)) if value.is_integer() else repr(value)
