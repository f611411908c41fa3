"""The check: every picked connection against every rule, and what a report holds."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from ..live import (
    Connection,
    ConnectionFilter,
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


@dataclasses.dataclass(frozen=True)
class Violation:
    """One connection that breaks at least one rule: what it has and, per rule, what it lacks."""

    command: str
    connection: Connection
    settings: KeepAliveSettings
    lacks: dict[str, str]


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
    result = scan(picked, wanted, source=source)
    summaries: list[ProcessSummary] = []
    violations: list[Violation] = []
    for found in result.found:
        command = command_name(found.pid)
        per_rule = {rule.name: 0 for rule in rules}
        checked = unread = 0
        for state in found.states:
            if state.settings is None:
                unread += 1
                continue
            checked += 1
            lacks = judge(state.settings, rules)
            if lacks:
                violations.append(Violation(command, state.connection, state.settings, lacks))
                for name in lacks:
                    per_rule[name] += 1
        summaries.append(
            ProcessSummary(found.pid, command, process_owner(found.pid), checked, unread, per_rule)
        )
    return Report(tuple(rules), picked, wanted, result, summaries, violations, time.perf_counter() - started)
