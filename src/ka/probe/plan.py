"""The search: which connection to test when, and what the answers say about the path.

No I/O and no clock: the runner (``ka.probe.run``) opens the connections, probes them, reports
what it saw (``connected``, ``answered``, ``heard``, ``died``, ...) with the time it saw it, and
asks ``step(now)`` what to do next. The unit tests drive the same object with a simulated
middlebox.

Three kinds of connection ("lines"):

- SILENT lines stay quiet until their test: a keepalive probe with a short idle, armed after the
  wait. An answer means the middlebox still knew the flow at that idle; silence (the kernel gives
  up after three unanswered probes) or a reset means it had forgotten it. A FIN or reset that
  arrives while no probe of ours is out is the middlebox (or the service) acting on its own
  timer: the timeout itself, to a round trip.
- KEEPALIVE lines carry a keepalive probe every second from the start. Where probes refresh the
  middlebox they outlive the timeout; where they do not, they die at it, and their last answered
  and first unanswered probe bracket it to about a second.
- PAYLOAD lines (only where the user allows payload) send a few bytes every second: does an
  application-level heartbeat keep the flow where probes do not?

Whether probes refresh is not known until the timeout has passed, so every answer is read under
both hypotheses: with refresh, a line's idle counts from the last packet it carried (an answered
probe restarts it); without, from the last payload (the handshake). The first wave of silent
lines is tested on a grid of idles that grows geometrically (``first_wave``); the first death
brackets the timeout, and lines whose probes were answered earlier, now younger by the time of
that answer, refine it by bisection without new connections (refinement assumes refresh: where
probes do not refresh, the keepalive lines have already measured the timeout). The search ends
when the bracket is within the precision and the keepalive lines have told which hypothesis
holds, or when a line has stayed idle ``max`` seconds and lived.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Literal

from .._durations import parse_duration

__all__ = [
    "KEEPALIVE_EVERY",
    "KEEPALIVE_LINES",
    "PAYLOAD_EVERY",
    "SPARE_LINES",
    "Death",
    "Estimate",
    "Line",
    "Plan",
    "Precision",
    "Progress",
    "Role",
    "Settings",
    "Step",
    "Test",
    "first_wave",
]

Death = Literal["silent", "reset", "fin"]

KEEPALIVE_EVERY = 1  # seconds: idle and interval of the keepalive lines (well below any timeout measured)
KEEPALIVE_LINES = 2
PAYLOAD_EVERY = 1.0  # seconds between the payload lines' heartbeats
TIMER_SLACK = 0.1  # seconds a 1 s kernel timer may fire late (timer wheel granularity)
SPARE_LINES = 2  # connections kept out of the first wave for the refinement to open when it must
MIN_MAX = 5.0  # seconds: the shortest --max (one test, a second of keepalive slack)


class Role(enum.Enum):
    """What a connection of the probe is for."""

    SILENT = "silent"
    KEEPALIVE = "keepalive"
    PAYLOAD = "payload"


@dataclass(frozen=True)
class Precision:
    """How close the reported timeout must be: within ``seconds`` or ``fraction`` of it, whichever
    is larger (``Precision(5, 0.05)``: +-5 s, or +-5% above 100 s)."""

    seconds: float = 5.0
    fraction: float = 0.05

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds >= 0):
            raise ValueError(f"precision seconds must be a finite number >= 0, not {self.seconds!r}")
        if not (math.isfinite(self.fraction) and 0 <= self.fraction < 0.5):
            raise ValueError(f"precision fraction must be at least 0 and below 0.5, not {self.fraction!r}")
        if self.seconds < 0.5 and self.fraction == 0:
            raise ValueError(
                "precision must allow at least 0.5 s (the resolution of a keepalive probe's timing): "
                f"got {self.seconds!r} s and 0%"
            )

    def at(self, timeout: float) -> float:
        """The allowed error in seconds for a timeout of ``timeout`` seconds."""
        return max(self.seconds, self.fraction * timeout, 0.5)

    def brackets(self, low: float, high: float) -> bool:
        """Whether the middle of (low, high] is within this precision of every timeout in it:
        judged at ``low``, where a fractional precision allows the least (with 1 ns of float
        rounding)."""
        return (high - low) / 2 <= self.at(low) + 1e-9

    @classmethod
    def parse(cls, text: str) -> Precision:
        """``5s,5%``, ``10s``, ``2%``, ``1m,3%``: seconds (a duration) and/or a percentage; a part
        left out counts 0 (``10s``: +-10 s at any timeout)."""
        seconds, fraction = 0.0, 0.0
        parts = [part.strip() for part in text.replace(" ", ",").split(",") if part.strip()]
        if not parts or len(parts) > 2:
            raise ValueError(
                f"precision {text!r}: expected seconds and/or a percentage, such as '5s,5%', '10s' or '2%'"
            )
        seen: set[str] = set()
        for part in parts:
            kind = "%" if part.endswith("%") else "s"
            if kind == "%":
                try:
                    fraction = float(part[:-1]) / 100
                except ValueError:
                    raise ValueError(f"precision {text!r}: {part!r} is not a percentage such as 5%") from None
            else:
                seconds = parse_duration(part, "precision")
            if kind in seen:
                raise ValueError(
                    f"precision {text!r} gives {'a percentage' if kind == '%' else 'seconds'} twice"
                )
            seen.add(kind)
        return cls(seconds, fraction)

    def __str__(self) -> str:
        parts = []
        if self.seconds:
            parts.append(f"+-{self.seconds:g} s")
        if self.fraction:
            parts.append(f"+-{self.fraction * 100:g}%")
        return " or ".join(parts) + (", whichever is larger" if len(parts) == 2 else "")


@dataclass(frozen=True)
class Settings:
    """What the search may spend: the longest idle tested (seconds), the precision, how many
    connections may be open at once, and whether a payload heartbeat may be sent."""

    max: float = 900.0
    precision: Precision = field(default_factory=Precision)
    connections: int = 24
    payload: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max) and self.max >= MIN_MAX):
            raise ValueError(f"max must be at least {MIN_MAX:g} seconds, not {self.max!r}")
        least = self.reserved + 3
        if isinstance(self.connections, bool) or not isinstance(self.connections, int):
            raise TypeError(f"connections must be a whole number, not {self.connections!r}")
        if not least <= self.connections <= 1000:
            raise ValueError(
                f"connections must be between {least} and 1000, not {self.connections}: "
                f"{self.reserved} are kept for the keepalive{' and payload' if self.payload else ''} "
                "lines and the refinement, and the first wave needs at least 3"
            )

    @property
    def reserved(self) -> int:
        """Connections not in the first wave: keepalive lines, the payload line, the spares."""
        return KEEPALIVE_LINES + (1 if self.payload else 0) + SPARE_LINES

    @property
    def deadline(self) -> float:
        """Seconds after which the search stops whatever it knows (a safety net: it ends long before)."""
        return 1.5 * self.max + 30.0


def _grid(first: float, last: float, step: float, ratio: float) -> list[float]:
    ages = [first]
    while ages[-1] < last:
        grown = ages[-1] + max(step, (ratio - 1.0) * ages[-1])
        # Half-second points: a timeout of whole seconds never sits on a test.
        grown = max(math.floor(grown) + 0.5, ages[-1] + 1.0)
        if grown >= last - step / 2:
            ages.append(last)
            break
        ages.append(grown)
    return ages


def first_wave(max_idle: float, precision: Precision, lines: int) -> list[float]:
    """The idles (seconds) at which the first wave's silent lines are tested, at most ``lines``.

    The first test sits at twice the absolute precision (a timeout below it is then known within
    the precision); each next one is ``ratio`` times the last, but at least the absolute precision
    further, with ``ratio`` the smallest that reaches ``max_idle`` in ``lines`` tests; points are
    on half seconds. The last is ``max_idle`` (plus half a second when it is whole).
    """
    last = max_idle + 0.5 if float(max_idle).is_integer() else max_idle
    first = min(max(2.5, 2 * precision.seconds) - 0.5, last)
    if first >= last:
        return [last]
    step = max(1.0, precision.seconds)
    low, high = 1.0, 16.0
    if len(_grid(first, last, step, low)) <= lines:
        return _grid(first, last, step, low)
    for _ in range(60):
        middle = (low + high) / 2
        if len(_grid(first, last, step, middle)) <= lines:
            high = middle
        else:
            low = middle
    return _grid(first, last, step, high)


@dataclass
class Line:
    """One connection of the probe, as the plan sees it (times are the runner's clock, seconds)."""

    id: int
    role: Role
    target: float | None = None  # a first-wave silent line: the idle of its test
    opened: float | None = None  # established
    data: float | None = None  # the last payload (or the handshake): the idle basis without refresh
    heard: float | None = None  # the last packet from the far end: the idle basis with refresh
    probe_sent: float | None = None  # a test probe is out since
    tested: bool = False
    closed: bool = False
    death: Death | None = None

    @property
    def idle(self) -> bool:
        """Open, established and not being tested."""
        return not self.closed and self.opened is not None and self.probe_sent is None


@dataclass(frozen=True)
class Test:
    """What one answer (or death) says: at ``at``, the flow was ``alive`` or not after an idle of
    ``data_age`` seconds since its last payload, ``heard_age`` since its last packet."""

    line: int
    role: Role
    at: float
    data_age: float
    heard_age: float
    alive: bool
    death: Death | None = None
    passive: bool = False  # died with no probe of ours outstanding: the timeout itself


@dataclass(frozen=True)
class Step:
    """What the runner does now: open these lines, arm a test probe on those, close the rest;
    then call ``step`` again at ``wake`` (the runner's clock) at the latest."""

    open: tuple[Line, ...] = ()
    probe: tuple[Line, ...] = ()
    close: tuple[Line, ...] = ()
    wake: float = math.inf
    finished: bool = False


@dataclass(frozen=True)
class Estimate:
    """What is known: the timeout lies in (low, high] seconds (high is inf while none is seen)."""

    low: float
    high: float
    probes_refresh: bool | None
    payload_refreshes: bool | None
    death: Death | None
    death_passive: bool
    beyond_max: bool  # a line stayed idle the whole --max and lived
    consistent: bool
    tests: int
    lines_opened: int
    connect_failures: int


@dataclass(frozen=True)
class Progress:
    """For a progress line: seconds since the start, what is being waited for, an upper bound on
    the seconds left (None when unknown), and the bracket so far."""

    elapsed: float
    waiting_for: str
    left: float | None
    low: float
    high: float


class Plan:
    """The search over one target; see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self.settings: Settings = settings
        silent = settings.connections - settings.reserved  # the first wave's lines
        self.ages: list[float] = first_wave(settings.max, settings.precision, silent)
        self.lines: dict[int, Line] = {}
        self.tests: list[Test] = []
        self.keepalive_deaths: list[Test] = []
        self.rtt: float = 0.001  # seconds; the runner updates it from TCP_INFO
        self.started: float | None = None
        self.probes_sent: int = 0
        self.connect_failures: int = 0
        self._finished = False

    # -- what the runner saw ------------------------------------------------------------------
    def connected(self, line_id: int, at: float) -> None:
        line = self.lines[line_id]
        line.opened = line.data = line.heard = at

    def connect_failed(self, line_id: int) -> None:
        self.lines[line_id].closed = True
        self.connect_failures += 1

    def received(self, line_id: int, at: float) -> None:
        """Payload from the far end (a banner, a reply): both idle clocks restart."""
        line = self.lines[line_id]
        line.data = line.heard = at

    def sent(self, line_id: int, at: float) -> None:
        """Payload sent on a line (the payload lines' heartbeat)."""
        self.lines[line_id].data = at

    def heard(self, line_id: int, at: float) -> None:
        """The last packet the far end sent on a keepalive or payload line (a probe's answer)."""
        line = self.lines[line_id]
        if line.heard is None or at > line.heard:
            line.heard = at

    def answered(self, line_id: int, at: float) -> None:
        """A silent line's test probe was answered at ``at``: alive; its refresh clock restarts."""
        line = self.lines[line_id]
        sent = line.probe_sent
        if sent is None or line.data is None or line.heard is None:
            return
        self.tests.append(Test(line.id, line.role, sent, sent - line.data, sent - line.heard, True))
        line.heard = max(at, sent)
        line.probe_sent = None
        line.tested = True

    def died(self, line_id: int, at: float, how: Death) -> None:
        """A line ended: no answer to its probes (``silent``), a reset, or a FIN."""
        line = self.lines[line_id]
        line.closed = True
        line.death = how
        if line.data is None or line.heard is None:
            return
        if line.role is Role.SILENT:
            sent = line.probe_sent
            passive = sent is None
            when = at if sent is None else sent
            self.tests.append(
                Test(line.id, line.role, when, when - line.data, when - line.heard, False, how, passive)
            )
            line.probe_sent = None
        elif line.role is Role.KEEPALIVE:
            # Without refresh: alive when its last answered probe passed, dead by the first one
            # left unanswered (sent an idle after the last answer, give or take the timer wheel's
            # slack) or when the FIN or reset came.
            next_probe = line.heard + KEEPALIVE_EVERY + self.slack + TIMER_SLACK
            first_unanswered = min(at, next_probe) if how == "silent" else at
            self.keepalive_deaths.append(
                Test(
                    line.id,
                    line.role,
                    first_unanswered,
                    first_unanswered - line.data,
                    first_unanswered - line.heard,
                    False,
                    how,
                    how == "fin",
                )
            )

    # -- what the answers say -----------------------------------------------------------------
    @property
    def slack(self) -> float:
        """Seconds a packet's passage through the middlebox may differ from when we saw its answer."""
        return 0.05 + 2 * self.rtt

    @property
    def tolerance(self) -> float:
        """How long before a FIN or reset arrived on its own the middlebox may have decided."""
        return 0.25 + 2 * self.rtt

    def bounds(self, refresh: bool) -> tuple[float, float]:
        """(low, high): the timeout is above low and at most high (seconds), if probes do
        (``refresh``) or do not refresh the middlebox."""
        low, high = 0.0, math.inf
        for test in self.tests:
            age = test.heard_age if refresh else test.data_age
            if test.alive:
                low = max(low, age)
            else:
                # The middlebox last refreshed the flow between our packet and its answer: the
                # age it saw can exceed the age counted from the answer by up to the slack.
                high = min(high, age + self.slack)
                if test.passive:
                    low = max(low, age - self.tolerance)
        if not refresh:
            for death in self.keepalive_deaths:
                high = min(high, death.data_age)
                if death.passive:
                    low = max(low, death.data_age - self.tolerance)
            for line in self.lines.values():
                if line.role is Role.KEEPALIVE and line.heard is not None and line.data is not None:
                    low = max(low, line.heard - self.slack - line.data)
        return low, high

    def probes_refresh(self) -> bool | None:
        """False once a keepalive line died; True once the flow was seen alive where, without
        refresh, it could not be (a keepalive line answered past the first silent death); else None."""
        if self.keepalive_deaths:
            return False
        low, high = self.bounds(False)
        if low > high:
            return True
        return None

    def payload_refreshes(self) -> bool | None:
        lines = [
            line for line in self.lines.values() if line.role is Role.PAYLOAD and line.opened is not None
        ]
        if not lines:
            return None
        if any(line.death is not None for line in lines):
            return False
        high = self.estimate_bounds()[1]
        for line in lines:
            if (
                line.heard is not None
                and line.opened is not None
                and line.heard - line.opened > high + self.slack
            ):
                return True
        return None

    def estimate_bounds(self) -> tuple[float, float]:
        """The bracket under the hypothesis that holds, or the union of both while unknown."""
        refresh = self.probes_refresh()
        if refresh is None:
            low_r, high_r = self.bounds(True)
            low_n, high_n = self.bounds(False)
            return min(low_r, low_n), max(high_r, high_n)
        return self.bounds(refresh)

    def beyond_max(self) -> bool:
        """A line idle for the whole of the first wave's last test lived (under either hypothesis)."""
        last = self.ages[-1]
        return min(self.bounds(True)[0], self.bounds(False)[0]) >= last

    def _deaths(self, refresh: bool | None) -> list[Test]:
        deaths = [test for test in self.tests if not test.alive]
        if refresh is not True:
            deaths += self.keepalive_deaths
        return sorted(deaths, key=lambda test: test.at)

    def estimate(self) -> Estimate:
        refresh = self.probes_refresh()
        low, high = self.estimate_bounds()
        consistent = low <= high
        if not consistent:
            low = high
        deaths = self._deaths(refresh)
        beyond = self.beyond_max() and not deaths
        return Estimate(
            low=low,
            high=high,
            probes_refresh=None if beyond else refresh,
            payload_refreshes=None if beyond else self.payload_refreshes(),
            death=deaths[0].death if deaths else None,
            death_passive=deaths[0].passive if deaths else False,
            beyond_max=beyond,
            consistent=consistent,
            tests=self.probes_sent,
            lines_opened=len(self.lines),
            connect_failures=self.connect_failures,
        )

    def precise_enough(self, low: float, high: float) -> bool:
        """The bracket's middle is within the precision of every timeout in (low, high]."""
        return self.settings.precision.brackets(low, high)

    def done(self, now: float) -> bool:
        if self._finished:
            return True
        if self.started is not None and now - self.started >= self.settings.deadline:
            return True
        if self.beyond_max() and not self._deaths(None):
            return True
        refresh = self.probes_refresh()
        if refresh is None:
            return False
        low, high = self.bounds(refresh)
        if refresh and not self.precise_enough(low, high):
            return False
        return not (
            any(line.role is Role.PAYLOAD and line.opened is not None for line in self.lines.values())
            and self.payload_refreshes() is None
        )

    # -- what to do next ----------------------------------------------------------------------
    def _new_line(self, role: Role, target: float | None = None) -> Line:
        line = Line(len(self.lines), role, target)
        self.lines[line.id] = line
        return line

    def _open_count(self) -> int:
        return sum(1 for line in self.lines.values() if not line.closed)

    def step(self, now: float) -> Step:
        """The actions due at ``now``; a probe is counted as sent when it is handed out here."""
        if self.started is None:
            self.started = now
            opened = [self._new_line(Role.KEEPALIVE) for _ in range(KEEPALIVE_LINES)]
            if self.settings.payload:
                opened.append(self._new_line(Role.PAYLOAD))
            opened += [self._new_line(Role.SILENT, age) for age in self.ages]
            return Step(open=tuple(opened), wake=now)
        if self.done(now):
            self._finished = True
            closing = tuple(line for line in self.lines.values() if not line.closed)
            for line in closing:
                line.closed = True
            return Step(close=closing, finished=True)
        probes: list[Line] = []
        closes: list[Line] = []
        opens: list[Line] = []
        wake = math.inf
        # The schedule assumes probes refresh: where they do not, the keepalive lines measure.
        low, high = self.bounds(True)
        silent = [line for line in self.lines.values() if line.role is Role.SILENT and line.idle]
        for line in silent:
            assert line.heard is not None
            if now - line.heard >= high:
                line.closed = True  # older than a death already seen: it can only die
                closes.append(line)
        silent = [line for line in silent if not line.closed]
        if high == math.inf:
            for line in silent:
                assert line.heard is not None
                if line.tested or line.target is None:
                    continue
                if line.target <= low:
                    line.target = None  # already known to live that long: kept for the refinement
                    continue
                due = line.heard + line.target
                if now >= due:
                    probes.append(line)
                else:
                    wake = min(wake, due)
        else:
            wake = min(wake, self._refine(now, low, high, silent, probes, opens))
        for line in probes:
            line.probe_sent = now
            self.probes_sent += 1
        return Step(open=tuple(opens), probe=tuple(probes), close=tuple(closes), wake=wake)

    def _refine(
        self, now: float, low: float, high: float, silent: list[Line], probes: list[Line], opens: list[Line]
    ) -> float:
        """Bisect (low, high]: test the line whose idle lies in the bracket's upper three quarters
        nearest its middle, one test at a time (a second test above a pending one is wasted if
        that one dies, and a death costs a line); else the time the next line reaches the middle,
        opening a fresh line when none would reach it sooner."""
        if self.precise_enough(low, high):
            return math.inf
        if any(
            line.role is Role.SILENT and not line.closed and line.probe_sent is not None
            for line in self.lines.values()
        ):
            return math.inf  # its answer calls step again
        middle = (low + high) / 2
        ages = {line.id: now - line.heard for line in silent if line.heard is not None}
        inside = [line for line in silent if low + (high - low) / 4 <= ages.get(line.id, -1.0) < high]
        if inside:
            probes.append(min(inside, key=lambda line: abs(ages[line.id] - middle)))
            return math.inf
        arrival = min((now + middle - age for age in ages.values() if age < middle), default=math.inf)
        connecting = any(
            line.role is Role.SILENT and line.opened is None and not line.closed
            for line in self.lines.values()
        )
        if arrival > now + middle and not connecting and self._open_count() < self.settings.connections:
            opens.append(self._new_line(Role.SILENT))  # a fresh line reaches the middle sooner
        return arrival

    # -- for a progress line --------------------------------------------------------------------
    def progress(self, now: float) -> Progress:
        started = self.started if self.started is not None else now
        elapsed = now - started
        low, high = self.estimate_bounds()
        if high == math.inf:
            waiting = [
                line
                for line in self.lines.values()
                if line.role is Role.SILENT
                and not line.closed
                and line.target is not None
                and not line.tested
                and line.heard is not None
            ]
            testing = [line for line in waiting if line.probe_sent is not None]
            if testing:
                age = max(line.target or 0.0 for line in testing)
                return Progress(elapsed, f"the answer to the test after {age:g} s idle", None, low, high)
            if waiting:
                line = min(waiting, key=lambda line: line.target or 0.0)
                assert line.heard is not None and line.target is not None
                due = line.heard + line.target
                last = max(line.target or 0.0 for line in waiting)
                return Progress(
                    elapsed,
                    f"the test after {line.target:g} s idle (in {max(0.0, due - now):.0f} s); "
                    f"the flow outlived {low:g} s so far",
                    max(0.0, started + last - now) + 4,
                    low,
                    high,
                )
            return Progress(elapsed, "the first connections", None, low, high)
        refresh = self.probes_refresh()
        if refresh is None or not self.precise_enough(*self.bounds(refresh)):
            return Progress(
                elapsed,
                f"narrowing {low:.1f}-{high:.1f} s and whether keepalive probes keep the flow",
                max(0.0, started + high * 1.3 + 10 - now),
                low,
                high,
            )
        return Progress(elapsed, "the payload line", max(0.0, started + high + 5 - now), low, high)
