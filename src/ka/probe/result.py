"""What ``ka.probe`` found, what it recommends, and how it is printed (text and JSON)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..policy import KeepAlive, heartbeat_interval
from .plan import Death, Estimate, Precision

__all__ = ["DEATHS", "ProbeResult", "build_result"]

# How a flow dies, in words: (on its own timer, in answer to the next packet).
DEATHS: dict[str, tuple[str, str]] = {
    "silent": (
        "silently: the flow's packets are dropped, with no reset and no FIN",
        "silently: the flow's packets are dropped, with no reset and no FIN",
    ),
    "reset": (
        "with a reset at the timeout, sent without any packet of ours",
        "with a reset in answer to the first packet after the timeout",
    ),
    "fin": (
        "closed with a FIN at the timeout (a proxy, or the service itself, closed it)",
        "closed with a FIN in answer to a probe",
    ),
}


@dataclass(frozen=True)
class ProbeResult:
    """The measurement of one path (seconds throughout).

    The timeout lies in (``idle_timeout_low``, ``idle_timeout_high``]; ``idle_timeout`` is the
    middle of that bracket, or None when no line died within ``max`` (or when a measurement cut
    short saw none). ``death``: ``"silent"``, ``"reset"`` or ``"fin"``; ``probes_refresh``: did
    keepalive probes keep the flow open past the timeout (None: not tested). ``recommended``:
    ``KeepAlive.for_path(self)``, or None where it cannot help, with ``heartbeat_interval`` the
    most seconds between application-level heartbeats such a path allows. ``advice`` says it in
    a sentence.
    """

    target: str
    max: float
    precision: Precision
    idle_timeout: float | None
    idle_timeout_low: float | None
    idle_timeout_high: float | None
    death: Death | None
    death_on_timer: bool
    probes_refresh: bool | None
    payload_refreshes: bool | None
    complete: bool
    elapsed: float
    connections: int
    probes: int
    recommended: KeepAlive | None
    heartbeat_interval: int | None
    advice: str
    notes: tuple[str, ...] = field(default=())

    @property
    def precision_met(self) -> bool:
        """Whether the bracket is within the precision asked wherever the timeout lies in it (judged
        at its low end, where a fractional precision allows the least; True when no timeout was
        found)."""
        if self.idle_timeout is None or self.idle_timeout_low is None or self.idle_timeout_high is None:
            return self.complete
        return self.precision.brackets(self.idle_timeout_low, self.idle_timeout_high)

    @property
    def error(self) -> float:
        """Half the bracket: the most ``idle_timeout`` can be off by (seconds; 0 without one)."""
        if self.idle_timeout_low is None or self.idle_timeout_high is None:
            return 0.0
        return (self.idle_timeout_high - self.idle_timeout_low) / 2

    @property
    def policy(self) -> str | None:
        """The recommended policy as a ``KA_POLICY`` string, or None."""
        return None if self.recommended is None else str(self.recommended)

    def as_json(self) -> dict[str, Any]:
        """The ``ka probe --json`` object (its first keys are the contract ``ka audit`` reads)."""
        return {
            "target": self.target,
            "idle_timeout": _round(self.idle_timeout),
            "max": _number(self.max),
            "death": self.death,
            "probes_refresh": self.probes_refresh,
            "recommended_policy": self.policy,
            "heartbeat_interval": self.heartbeat_interval,
            "idle_timeout_low": _round(self.idle_timeout_low),
            "idle_timeout_high": _round(self.idle_timeout_high),
            "precision": _round(self.precision.at(self.idle_timeout or 0.0)),
            "precision_met": self.precision_met,
            "death_on": None if self.death is None else ("timer" if self.death_on_timer else "packet"),
            "payload_refreshes": self.payload_refreshes,
            "advice": self.advice,
            "complete": self.complete,
            "elapsed": _round(self.elapsed),
            "connections": self.connections,
            "probes": self.probes,
            "notes": list(self.notes),
        }

    def report(self) -> list[str]:
        """The result in words, a summary line first (what ``ka probe`` prints)."""
        lines = [self._headline()]
        rows: list[tuple[str, str]] = []
        if self.death is not None:
            rows.append(("dies", DEATHS[self.death][0 if self.death_on_timer else 1]))
        if self.probes_refresh is not None:
            rows.append(
                (
                    "keepalive probes",
                    "keep it open: connections probed every second outlived the timeout"
                    if self.probes_refresh
                    else "do not keep it open: connections probed every second died at the timeout too",
                )
            )
        if self.payload_refreshes is not None:
            rows.append(
                (
                    "payload heartbeat",
                    "keeps it open" if self.payload_refreshes else "does not keep it open either",
                )
            )
        if self.recommended is not None:
            rows.append(("recommended", f"{self.policy}"))
            rows.append(("", f'export KA_POLICY="{self.policy}"'))
        elif self.heartbeat_interval is not None:
            rows.append(
                (
                    "heartbeat",
                    f"payload at least every {self.heartbeat_interval} s (TCP keepalive cannot help)",
                )
            )
        rows.append(("advice", self.advice))
        rows.append(
            (
                "measured",
                f"in {_duration(self.elapsed)} with {self.connections} connections and "
                f"{self.probes} test probe{'' if self.probes == 1 else 's'}"
                + ("" if self.complete else " (interrupted)"),
            )
        )
        rows += [("note", note) for note in self.notes]
        width = max(len(name) for name, _ in rows)
        lines += [f"  {name:<{width}}  {text}".rstrip() for name, text in rows]
        return lines

    def _headline(self) -> str:
        head = f"{self.target}: "
        if self.idle_timeout is not None and self.idle_timeout_low is not None:
            reached = "asked" if self.precision_met else "asked, not reached"
            return head + (
                f"idle timeout {_duration(self.idle_timeout)}, between {self.idle_timeout_low:.1f} and "
                f"{self.idle_timeout_high:.1f} s ({reached}: {self.precision})"
            )
        if self.complete:
            return head + f"no idle timeout up to {_duration(self.max)} (--max)"
        low = self.idle_timeout_low or 0.0
        return head + f"interrupted: the flow outlived {_duration(low)} of silence so far"


def _round(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else round(value, 1)


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _duration(seconds: float) -> str:
    """``43.5 s``, ``6 s``, ``15 min``, ``5 min 50 s``."""
    if seconds < 120:
        return f"{round(seconds, 1):g} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def build_result(
    target: str,
    estimate: Estimate,
    max_idle: float,
    precision: Precision,
    elapsed: float,
    complete: bool,
) -> ProbeResult:
    """The result of a search: its bracket, and the policy or heartbeat it calls for."""
    found = estimate.high < math.inf and not estimate.beyond_max
    low = estimate.low
    high = estimate.high if found else None
    middle = (low + estimate.high) / 2 if found else None
    notes: list[str] = []
    if not estimate.consistent:
        notes.append(
            "some answers disagreed (a lost probe, or a middlebox that does not time flows out "
            "by idle alone); the bracket keeps the latest death"
        )
    if estimate.connect_failures:
        notes.append(f"{estimate.connect_failures} connections could not be opened")
    draft = ProbeResult(
        target=target,
        max=max_idle,
        precision=precision,
        idle_timeout=middle,
        idle_timeout_low=low,
        idle_timeout_high=high,
        death=estimate.death if found else None,
        death_on_timer=estimate.death_passive,
        probes_refresh=estimate.probes_refresh if found else None,
        payload_refreshes=estimate.payload_refreshes if found else None,
        complete=complete,
        elapsed=elapsed,
        connections=estimate.lines_opened,
        probes=estimate.tests,
        recommended=None,
        heartbeat_interval=None,
        advice="",
        notes=tuple(notes),
    )
    recommended: KeepAlive | None = None
    heartbeat: int | None = None
    try:
        recommended = KeepAlive.for_path(draft)
    except ValueError as exc:
        advice = str(exc)
        advice = advice[0].upper() + advice[1:] + "."
        if found and draft.probes_refresh is False:
            heartbeat = heartbeat_interval(low)
    else:
        if found:
            advice = (
                f"Probe before {low:.0f} s of silence: this policy sends its first probe after "
                f"{recommended.idle} s and retries every {recommended.interval} s, so the middlebox "
                "never forgets a live connection, and a dead peer is found within "
                f"{recommended.detection_time:g} s."
            )
        else:
            advice = (
                f"Nothing on this path dropped an idle flow within {_duration(max_idle)}. This policy probes "
                f"before that, so any longer timeout that counts probes is kept too; a longer --max "
                "measures further."
            )
    return ProbeResult(
        **{**draft.__dict__, "recommended": recommended, "heartbeat_interval": heartbeat, "advice": advice}
    )
