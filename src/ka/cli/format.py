"""How the ka command prints: durations, tables, JSON, and the pieces of a connection."""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from .. import live

# SGR codes of the few styles ka uses.
_SGR = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


class _Colour:
    enabled = False  # set once per command line by ``use_colour``


def colour_wanted(when: str, stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether text output gets colour: ``when`` is ``always``, ``never`` or ``auto``; auto is on
    for a terminal (not ``TERM=dumb``), off for pipes and files. ``NO_COLOR`` (set and not empty,
    no-color.org) turns it off; ``FORCE_COLOR`` (set and not empty, force-color.org) on."""
    if when != "auto":
        return when == "always"
    if environ.get("NO_COLOR"):
        return False
    if environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and environ.get("TERM") != "dumb"


def use_colour(enabled: bool) -> None:
    _Colour.enabled = enabled


def paint(text: str, style: str | None) -> str:
    """``text`` in ``style`` (bold, dim, red, green, yellow, cyan) when colour is on."""
    if not _Colour.enabled or not style or not text:
        return text
    return f"\x1b[{_SGR[style]}m{text}\x1b[0m"


def width(text: str) -> int:
    """Columns ``text`` takes on a terminal: wide (East Asian) characters 2, combining marks 0."""
    if text.isascii():
        return len(text)
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


def human(seconds: float) -> str:
    """``7875`` -> ``2 h 11 min 15 s``; ``1.5`` -> ``1.5 s``."""
    if seconds < 60:
        return f"{seconds:g} s"
    whole = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if whole >= size:
            parts.append(f"{whole // size} {unit}")
            whole %= size
    return " ".join(parts)


def compact(seconds: float | None) -> str:
    """A short duration for tables: ``2h11m``, ``1m50s``, ``55s``; ``-`` for None."""
    if seconds is None:
        return "-"
    text = human(seconds).replace(" min", "m").replace(" ", "")
    return text


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: set[int],
    styles: Callable[[int, str], str | None] | None = None,
) -> str:
    """Columns padded to their widest cell (right-aligned for the indexes in ``right``), however
    long a name; ``styles(column, cell)`` names a cell's colour, the header row is bold."""
    widths = [width(h) for h in headers]
    for row in rows:
        widths = [max(w, width(cell)) for w, cell in zip(widths, row)]
    lines = []
    for n, row in enumerate([list(headers), *rows]):
        cells = []
        for i, (cell, size) in enumerate(zip(row, widths)):
            pad = " " * (size - width(cell))
            style = "bold" if n == 0 else styles(i, cell) if styles else None
            last = i == len(widths) - 1
            cells.append(
                pad + paint(cell, style) if i in right else paint(cell, style) + ("" if last else pad)
            )
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def keepalive_style(text: str) -> str | None:
    """The colour of a keepalive cell: off yellow, on green, unknown red."""
    if text.startswith("off"):
        return "yellow"
    if text.startswith("on"):
        return "green"
    return "red" if text.startswith("?") else None


def status_style(text: str) -> str | None:
    """The colour of a result: applied green, failed red, gone and would change yellow."""
    word = text.split(":")[0]
    return {"applied": "green", "already set": "green", "failed": "red", "gone": "yellow"}.get(
        word, "cyan" if word == "would change" else None
    )


def screenful(stream: TextIO | None = None) -> int | None:
    """How many table rows fit the terminal above a few lines of text (its height, or ``LINES``);
    None (no limit) when the output is not a terminal: pipes and files always get every row."""
    import shutil
    import sys

    out = sys.stdout if stream is None else stream
    isatty = getattr(out, "isatty", None)
    if not (isatty and isatty()):
        return None
    return max(5, shutil.get_terminal_size().lines - 6)


def endpoint_data(endpoint: live.Endpoint) -> dict[str, Any]:
    return {"address": endpoint.address, "port": endpoint.port}


def timer_data(timer: live.Timer) -> dict[str, Any]:
    return {
        "name": timer.name,
        "expires": timer.expires,
        "probes": timer.probes,
        "retransmits": timer.retransmits,
    }


def settings_data(settings: Any) -> dict[str, Any] | None:
    if settings is None:
        return None
    return {
        "enabled": settings.enabled,
        "idle": settings.idle,
        "interval": settings.interval,
        "count": settings.count,
        "user_timeout": settings.user_timeout,
        "dead_peer_after": live.dead_peer_after(settings),
    }


def connection_data(conn: live.Connection) -> dict[str, Any]:
    return {
        "fd": conn.fd,
        "inode": conn.inode,
        "family": conn.family,
        "local": endpoint_data(conn.local),
        "remote": endpoint_data(conn.remote),
        "state": conn.state,
    }


def settings_text(settings: Any) -> str:
    if settings is None:
        return "?"
    values = "/".join(
        "?" if v is None else str(v) for v in (settings.idle, settings.interval, settings.count)
    )
    text = f"{'on' if settings.enabled else 'off'} {values}"
    if settings.user_timeout:
        text += f" ut={compact(settings.user_timeout)}"
    return text


def timer_text(timer: live.Timer) -> str:
    if timer.name == "none":
        return "-"
    # Whole seconds like ss, except below 10 s where a tenth tells more.
    expires = compact(round(timer.expires) if timer.expires >= 10 else round(timer.expires, 1))
    if timer.name == "keepalive":
        return f"keepalive {expires} ({timer.probes} sent)"
    return f"{timer.name} {expires}"
