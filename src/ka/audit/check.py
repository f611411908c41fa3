"""The check: every picked connection against every rule, and what a report holds."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from .._gc import collector_paused
from ..live import (
    Connection,
    ConnectionFilter,
    ProcessConnections,
    ProcessFilter,
    Scan,
    Skipped,
    command_name,
    process_owner,
    scan,
)
from ..results import KeepAliveSettings
from .rules import Rule


def judge(settings: KeepAliveSettings, rules: Sequence[Rule]) -> dict[str, str]:
    """What these values lack, by rule name, for each rule they break (empty: they pass)."""
    found = {}
    for rule in rules:
        lacking = rule.lacks(settings)
        if lacking is not None:
            found[rule.name] = lacking
    return found


class Violation(NamedTuple):
    """One connection that breaks at least one rule: what it has and, per rule, what it lacks.

    ``lacks`` is shared by the violations with equal values (read-only; ``dict(v.lacks)`` to
    change a copy). A NamedTuple: an audit may make one per connection."""

    command: str
    connection: Connection
    settings: KeepAliveSettings
    lacks: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class ProcessSummary:
    """One process read: connections checked, those not read (closed meanwhile), and how many
    connections break each rule (every rule named, 0 included)."""

    pid: int
    command: str
    uid: int | None
    checked: int
    unread: int
    violations: dict[str, int]

    @property
    def violating(self) -> bool:
        return any(self.violations.values())


@dataclasses.dataclass(frozen=True)
class Report:
    """The outcome of ``audit``. ``scan``: everything read (the exporter counts from it too)."""

    rules: tuple[Rule, ...]
    processes: ProcessFilter
    connections: ConnectionFilter
    scan: Scan
    summaries: list[ProcessSummary]
    violations: list[Violation]
    seconds: float

    @property
    def unreadable(self) -> list[Skipped]:
        return self.scan.skipped

    @property
    def checked(self) -> int:
        return sum(s.checked for s in self.summaries)

    def count(self, rule: str) -> int:
        """Connections breaking ``rule``, over every process."""
        return sum(s.violations.get(rule, 0) for s in self.summaries)


def audit(
    rules: Sequence[Rule],
    processes: ProcessFilter | None = None,
    connections: ConnectionFilter | None = None,
    *,
    source: str = "auto",
) -> Report:
    """Read the picked processes' connections (``ka.live.scan``) and check each against ``rules``.

    A process that cannot be read is in ``Report.unreadable`` (with the cause); a connection
    closed between listing and reading is counted as ``unread``, not judged.
    """
    started = time.perf_counter()
    picked = processes or ProcessFilter()
    wanted = connections or ConnectionFilter()
    with collector_paused():  # a Violation per breaking connection, and no cycle
        result = scan(picked, wanted, source=source)
        violations: list[Violation] = []
        verdicts: dict[KeepAliveSettings, dict[str, str]] = {}
        summaries = [_check(found, rules, verdicts, violations) for found in result.found]
    return Report(tuple(rules), picked, wanted, result, summaries, violations, time.perf_counter() - started)


def _check(
    found: ProcessConnections,
    rules: Sequence[Rule],
    verdicts: dict[KeepAliveSettings, dict[str, str]],
    violations: list[Violation],
) -> ProcessSummary:
    """One process's connections against the rules: its summary; its violations appended.

    Rules look at values only, and connections share a few distinct values (``ka.live.read``
    gives equal values one object): each value is judged once (``verdicts``), counted per value.
    """
    command = command_name(found.pid)
    breaking: dict[KeepAliveSettings, int] = {}
    unread = 0
    for state in found.states:
        settings = state.settings
        if settings is None:
            unread += 1
            continue
        lacks = verdicts.get(settings)
        if lacks is None:
            lacks = verdicts[settings] = judge(settings, rules)
        if lacks:
            violations.append(Violation(command, state.connection, settings, lacks))
            breaking[settings] = breaking.get(settings, 0) + 1
    per_rule = {rule.name: 0 for rule in rules}
    for settings, count in breaking.items():
        for name in verdicts[settings]:
            per_rule[name] += count
    checked = len(found.states) - unread
    return ProcessSummary(found.pid, command, process_owner(found.pid), checked, unread, per_rule)
