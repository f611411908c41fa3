"""How the ka command prints: durations, tables, JSON, and the pieces of a connection."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .. import live


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


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """Columns padded to their widest cell (right-aligned for the indexes in ``right``)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


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
