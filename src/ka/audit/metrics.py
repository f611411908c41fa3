"""The Prometheus exporter's collector: the keepalive state of live connections as metrics.

Built on ``audit`` (the same reads and rules as ``ka audit``). Labels stay bounded: per process
(``pid``, ``command``) and service port, never per connection. A connection's ``port`` is its
local port when that is a port a picked process listens on (``direction="in"``: accepted), else
its remote port (``direction="out"``: the service it calls), so ephemeral ports never become
labels. Listening sockets are not counted.

The metrics (every one documented in docs/audit.md):

- ``ka_connections{pid,command,port,direction,keepalive}``: connections by keepalive state:
  ``off``; ``system`` (on, with idle, interval and count equal to the system defaults of ka's
  network namespace and no user timeout); ``own`` (on, with other values).
- ``ka_detection_seconds{pid,command,port,direction}``: a histogram of when a silent dead peer is
  found (``ka.live.dead_peer_after``), for connections with keepalive on.
- ``ka_audit_violations{pid,command,port,direction,rule}``: connections breaking each rule
  (only when rules are given; 0 included), and ``ka_audit_rule_info{rule,description}``.
- ``ka_processes_read``, ``ka_processes_unreadable{cause}`` (``permission`` or ``error``).
- ``ka_system_keepalive_idle_seconds``, ``..._interval_seconds``, ``..._probes``: the defaults.
- ``ka_scrape_duration_seconds`` (the last refresh), ``ka_scrape_errors_total``,
  ``ka_refreshes_total``, ``ka_last_refresh_timestamp_seconds``.

``prometheus-client`` is imported only here, when metrics are collected (the ``ka[prometheus]`` extra).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ..live import ConnectionFilter, ProcessFilter, dead_peer_after
from ..results import KeepAliveSettings
from ..system import SystemDefaults, system_defaults
from .check import Report, audit, judge
from .rules import Rule

__all__ = [
    "DETECTION_BUCKETS",
    "GROUP_LABELS",
    "KEEPALIVE_STATES",
    "Collector",
    "Group",
    "Snapshot",
    "keepalive_state",
    "snapshot",
]

#: The upper bounds (seconds) of ``ka_detection_seconds``' buckets: 5 s to the Linux default's
#: 2 h 11 min 15 s (7875), and beyond.
DETECTION_BUCKETS = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7875.0, float("inf"))
#: The labels of a group: process id, command name, service port, ``in`` (accepted) or ``out``.
GROUP_LABELS = ("pid", "command", "port", "direction")
#: The values of ``ka_connections``' ``keepalive`` label (see ``keepalive_state``).
KEEPALIVE_STATES = ("off", "system", "own")


def keepalive_state(settings: KeepAliveSettings, defaults: SystemDefaults) -> str:
    """``off``, ``system`` (the defaults' idle, interval and count, no user timeout) or ``own``."""
    if not settings.enabled:
        return "off"
    same = (settings.idle, settings.interval, settings.count) == (
        defaults.idle,
        defaults.interval,
        defaults.count,
    )
    return "system" if same and not settings.user_timeout else "own"


@dataclasses.dataclass
class Group:
    """The counts of one (pid, command, port, direction)."""

    keepalive: dict[str, int]
    buckets: list[int]  # cumulative counts per DETECTION_BUCKETS bound
    detection_sum: float
    violations: dict[str, int]


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What one refresh read: the groups, the processes read and not read, the defaults."""

    groups: dict[tuple[str, str, str, str], Group]
    processes_read: int
    unreadable: dict[str, int]
    defaults: SystemDefaults
    rules: tuple[Rule, ...]


def snapshot(report: Report, defaults: SystemDefaults) -> Snapshot:
    """Counts by group from an audit report (read with listeners included: see ``Collector``).

    Connections are tallied by group and value first (a server's connections share a few
    values); each distinct value is then classified, placed in the buckets and judged once."""
    listening: set[int] = set()
    for found in report.scan.found:
        listening.update(s.connection.local.port for s in found.states if s.connection.state == "listen")
    rules = report.rules
    tallies: dict[tuple[int, int, bool], dict[KeepAliveSettings, int]] = {}
    for found in report.scan.found:
        for state in found.states:
            conn, settings = state.connection, state.settings
            if settings is None or conn.state == "listen":
                continue
            port = conn.local.port
            inbound = port in listening
            key = (conn.pid, port if inbound else conn.remote.port, inbound)
            tally = tallies.get(key)
            if tally is None:
                tally = tallies[key] = {}
            tally[settings] = tally.get(settings, 0) + 1
    commands = {s.pid: s.command for s in report.summaries}
    groups: dict[tuple[str, str, str, str], Group] = {}
    for (pid, port, inbound), tally in tallies.items():
        group = Group(
            dict.fromkeys(KEEPALIVE_STATES, 0),
            [0] * len(DETECTION_BUCKETS),
            0.0,
            {rule.name: 0 for rule in rules},
        )
        groups[(str(pid), commands.get(pid, "?"), str(port), "in" if inbound else "out")] = group
        for settings, count in tally.items():
            group.keepalive[keepalive_state(settings, defaults)] += count
            after = dead_peer_after(settings)
            if after is not None:
                group.detection_sum += after * count
                for i, bound in enumerate(DETECTION_BUCKETS):
                    if after <= bound:
                        group.buckets[i] += count
            for name in judge(settings, rules):
                group.violations[name] += count
    unreadable = {"permission": 0, "error": 0}
    for skipped in report.unreadable:
        unreadable["permission" if skipped.permission else "error"] += 1
    return Snapshot(groups, len(report.scan.found), unreadable, defaults, rules)


class Collector:
    """A prometheus-client collector (``registry.register(collector)``) over ``audit``.

    ``interval``: None refreshes on every scrape (each scrape pays for one audit); a number of
    seconds refreshes in a background thread that often (``start()``), and scrapes read the last
    refresh. A refresh that fails counts in ``ka_scrape_errors_total`` and keeps the last one.
    """

    def __init__(
        self,
        rules: Sequence[Rule] = (),
        processes: ProcessFilter | None = None,
        connections: ConnectionFilter | None = None,
        *,
        interval: float | None = None,
        source: str = "auto",
    ) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.processes: ProcessFilter = processes or ProcessFilter()
        base = connections or ConnectionFilter(states=None)
        states = None if base.states is None else base.states | {"listen"}
        # listeners tell in from out
        self.connections: ConnectionFilter = dataclasses.replace(base, states=states)
        self.interval: float | None = interval
        self.source: str = source
        self.errors: int = 0  # refreshes that failed
        self.refreshes: int = 0
        self.duration: float = 0.0  # seconds the last refresh took
        self.refreshed_at: float = 0.0  # Unix time the last refresh ended
        self.last: Snapshot | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        """Read everything again (one audit); on failure count an error and keep the last."""
        started = time.perf_counter()
        try:
            report = audit(self.rules, self.processes, self.connections, source=self.source)
            taken = snapshot(report, system_defaults())
        except Exception:  # a scrape must answer: the error is counted, the last numbers stay
            with self._lock:
                self.errors += 1
            return
        with self._lock:
            self.last = taken
            self.refreshes += 1
            self.duration = time.perf_counter() - started
            self.refreshed_at = time.time()

    def start(self) -> None:
        """Refresh now, then every ``interval`` seconds in a daemon thread, until ``stop()``."""
        if self.interval is None:
            raise ValueError("this collector refreshes on scrape: it has no interval to run on")
        self.refresh()
        interval = self.interval

        def loop() -> None:
            while not self._stop.wait(interval):
                self.refresh()

        self._thread = threading.Thread(target=loop, name="ka-exporter-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the background refresh that ``start()`` began (a no-op without one)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def describe(self) -> Iterator[Any]:
        """Nothing: prometheus-client then does not scrape at registration (the metrics are
        known only once read)."""
        return iter(())

    def collect(self) -> Iterator[Any]:
        """The metric families (prometheus-client calls it on each scrape): refreshes first when
        there is no interval."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        if self.interval is None:
            self.refresh()
        with self._lock:
            taken, errors, refreshes = self.last, self.errors, self.refreshes
            duration, refreshed_at = self.duration, self.refreshed_at
        yield CounterMetricFamily(
            "ka_scrape_errors", "Refreshes that failed (the last good numbers are served).", value=errors
        )
        yield CounterMetricFamily(
            "ka_refreshes", "Refreshes done (one audit of the picked processes each).", value=refreshes
        )
        yield GaugeMetricFamily(
            "ka_scrape_duration_seconds",
            "Seconds the last refresh took (reading and counting).",
            value=duration,
        )
        yield GaugeMetricFamily(
            "ka_last_refresh_timestamp_seconds",
            "When the last refresh ended (Unix time).",
            value=refreshed_at,
        )
        if taken is None:
            return
        d = taken.defaults
        for name, doc, value in (
            ("idle_seconds", "tcp_keepalive_time: silence before the first probe", d.idle),
            ("interval_seconds", "tcp_keepalive_intvl: seconds between probes", d.interval),
            ("probes", "tcp_keepalive_probes: unanswered probes before the drop", d.count),
        ):
            yield GaugeMetricFamily(
                f"ka_system_keepalive_{name}",
                f"The system default {doc} (ka's network namespace).",
                value=value,
            )
        yield GaugeMetricFamily(
            "ka_processes_read", "Processes read that hold picked connections.", value=taken.processes_read
        )
        unreadable = GaugeMetricFamily(
            "ka_processes_unreadable",
            "Picked processes ka could not read, by cause (permission: no ptrace permission).",
            labels=["cause"],
        )
        for cause, count in taken.unreadable.items():
            unreadable.add_metric([cause], count)
        yield unreadable
        connections = GaugeMetricFamily(
            "ka_connections",
            "TCP connections by keepalive state: off, system (the system defaults), own (other values).",
            labels=[*GROUP_LABELS, "keepalive"],
        )
        detection = HistogramMetricFamily(
            "ka_detection_seconds",
            "Seconds after which a silent dead peer is found, for connections with keepalive on.",
            labels=list(GROUP_LABELS),
        )
        violations = GaugeMetricFamily(
            "ka_audit_violations", "Connections breaking each audit rule.", labels=[*GROUP_LABELS, "rule"]
        )
        for key, group in sorted(taken.groups.items()):
            for state, count in group.keepalive.items():
                connections.add_metric([*key, state], count)
            bounds = [
                ("+Inf" if b == float("inf") else f"{b:g}", float(n))
                for b, n in zip(DETECTION_BUCKETS, group.buckets)
            ]
            detection.add_metric(list(key), bounds, group.detection_sum)
            for rule, count in group.violations.items():
                violations.add_metric([*key, rule], count)
        yield connections
        yield detection
        if taken.rules:
            yield violations
            info = GaugeMetricFamily(
                "ka_audit_rule_info", "The audit rules checked (value 1).", labels=["rule", "description"]
            )
            for checked in taken.rules:
                info.add_metric([checked.name, checked.description], 1)
            yield info
