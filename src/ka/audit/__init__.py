"""Checking live connections against rules (``ka audit``), and the Prometheus exporter built on
the same reads (``ka exporter``). Linux: the reads are ``ka.live``'s.

The modules: ``rules`` (what a connection must carry), ``check`` (every picked connection
against every rule), ``report`` (the report as JSON data and as text), ``metrics`` (the
exporter's collector; needs ``prometheus-client``).
"""

from __future__ import annotations

from . import report
from .check import ProcessSummary, Report, Violation, audit, judge
from .rules import (
    AtLeastPolicy,
    MaxDetection,
    PathTimeout,
    RequireUserTimeout,
    Rule,
    path_margin,
    probe_result,
)

__all__ = [
    "AtLeastPolicy",
    "MaxDetection",
    "PathTimeout",
    "ProcessSummary",
    "Report",
    "RequireUserTimeout",
    "Rule",
    "Violation",
    "audit",
    "judge",
    "path_margin",
    "probe_result",
    "report",
]
