"""Checking live connections against rules (``ka audit``), and the Prometheus exporter built on
the same reads (``ka exporter``). Linux: the reads are ``ka.live``'s.

The public names (``__all__``) are here: the rules (``Rule`` and the four kinds), ``audit`` and
``judge``, and what a report holds. Two public modules of their own: ``report`` (a report as the
JSON of ``ka audit --json``, and the outcome that decides its exit status) and ``metrics`` (the
exporter's collector; needs ``prometheus-client``). The rooms behind the names: ``rules`` (what
a connection must carry), ``check`` (every picked connection against every rule).
"""

from __future__ import annotations

from . import report as report  # a public module of its own (the JSON of ka audit --json)
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
]
