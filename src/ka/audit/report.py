"""A report as data: one JSON-ready object (``ka audit --json``), and the exit status it means.

``report_data(report)`` is the object ``ka audit --json`` prints (without its ``exit_code``);
``outcome(report)`` is one of the four outcomes below, each an exit status of ``ka audit``
(docs/cli.md: 0, 1, 3, 6).
"""

from __future__ import annotations

from typing import Any

from ..live import Connection, Endpoint, dead_peer_after
from ..results import KeepAliveSettings
from .check import Report

__all__ = [
    "CLEAN",
    "UNREADABLE_ERROR",
    "UNREADABLE_PERMISSION",
    "VIOLATIONS",
    "connection_data",
    "outcome",
    "report_data",
    "settings_data",
]

# What each exit status of `ka audit` means (the numbers are ka.cli.checks' EXIT_*).
#: Every picked connection passes every rule, and every picked process was read (exit 0).
CLEAN = "clean"
#: A connection breaks a rule (exit 1).
VIOLATIONS = "violations"
#: No violation, but a picked process could not be read for lack of ptrace permission (exit 3).
UNREADABLE_PERMISSION = "permission"
#: No violation, but a picked process could not be read for another reason (exit 6).
UNREADABLE_ERROR = "error"


def outcome(report: Report) -> str:
    """``violations`` when a connection breaks a rule; else ``permission`` when a picked process
    could not be read for lack of ptrace permission; else ``error`` when one could not be read for
    another reason; else ``clean``."""
    if report.violations:
        return VIOLATIONS
    if any(s.permission for s in report.unreadable):
        return UNREADABLE_PERMISSION
    if report.unreadable:
        return UNREADABLE_ERROR
    return CLEAN


def _endpoint(endpoint: Endpoint) -> dict[str, Any]:
    return {"address": endpoint.address, "port": endpoint.port}


def connection_data(conn: Connection) -> dict[str, Any]:
    """One connection as JSON data: descriptor, socket inode, family, both ends, TCP state."""
    return {
        "fd": conn.fd,
        "inode": conn.inode,
        "family": conn.family,
        "local": _endpoint(conn.local),
        "remote": _endpoint(conn.remote),
        "state": conn.state,
    }


def settings_data(settings: KeepAliveSettings) -> dict[str, Any]:
    """One connection's keepalive values as JSON data, with when a silent dead peer is found
    (``dead_peer_after``: seconds; None with keepalive off or a value unknown)."""
    return {**settings._asdict(), "dead_peer_after": dead_peer_after(settings)}


def report_data(report: Report) -> dict[str, Any]:
    """The whole report as one JSON-ready object (``exit_code`` is the caller's to add)."""
    return {
        "rules": [{"name": r.name, "description": r.description} for r in report.rules],
        "selection": {
            "processes": report.processes.describe(),
            "connections": report.connections.describe()
            + ([f"state {','.join(sorted(report.connections.states))}"] if report.connections.states else []),
        },
        "summary": {
            "outcome": outcome(report),
            "processes": len(report.summaries),
            "connections": report.checked,
            "violating_connections": len(report.violations),
            "violations": {r.name: report.count(r.name) for r in report.rules},
            "unreadable_processes": len(report.unreadable),
            "seconds": round(report.seconds, 6),
        },
        "processes": [
            {
                "pid": s.pid,
                "command": s.command,
                "uid": s.uid,
                "connections": s.checked,
                "unread": s.unread,
                "violations": s.violations,
            }
            for s in report.summaries
        ],
        "violations": [
            {
                "pid": v.connection.pid,
                "command": v.command,
                **connection_data(v.connection),
                "has": settings_data(v.settings),
                "lacks": dict(v.lacks),
            }
            for v in report.violations
        ],
        "unreadable": [s._asdict() for s in report.unreadable],
        "table_sources": report.scan.sources,
    }
