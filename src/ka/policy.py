"""KeepAlive: the values of a keepalive policy, and the recipes that choose them.

Every check happens when a policy is built (``ka.units``), so ``apply`` never reaches the kernel
with a value it would refuse. Ranges are this platform's (see ``ka.capabilities()``).
"""

from __future__ import annotations

import datetime
import math
import os
import struct
from typing import Any, Literal, Protocol, Union

from ._durations import format_seconds
from ._options import LIMITS, SOCKET_NUMBERS, Option, user_timeout_value
from .errors import policy_error
from .protocol import LEAVE, Spec
from .syntax import PolicyFields, parse_fields
from .units import (
    check_detection_span,
    detection_budget,
    detection_cap,
    detection_time,
    fit_budget,
    probe_count,
    seconds_down,
    seconds_up,
    user_timeout_ms,
    whole_seconds,
)

Duration = Union[int, float, datetime.timedelta]
UserTimeout = Union[Duration, Literal["auto"], None]

# The compiled core's ka_policy struct: five C ints (enable, idle, interval, count, user timeout ms).
C_POLICY = struct.Struct("=5i")


class Defaults(Protocol):
    """Keepalive values a socket falls back on (``ka.SystemDefaults``, or any such triple)."""

    @property
    def idle(self) -> int: ...
    @property
    def interval(self) -> int: ...
    @property
    def count(self) -> int: ...


class PathMeasurement(Protocol):
    """What ``KeepAlive.for_path`` reads from a measurement of a path (``ka.probe``'s
    ``ProbeResult``, or anything with these attributes)."""

    @property
    def idle_timeout(self) -> float | None:
        """Seconds of silence after which the path dropped the flow; None if none was seen."""

    @property
    def idle_timeout_low(self) -> float | None:
        """The longest silence (seconds) the flow is known to have survived."""

    @property
    def max(self) -> float:
        """The longest silence tested (seconds)."""

    @property
    def probes_refresh(self) -> bool | None:
        """Whether keepalive probes kept the flow open past the timeout (None: not known)."""

    @property
    def complete(self) -> bool:
        """False for a measurement cut short (interrupted)."""


def heartbeat_interval(survived: float) -> int:
    """Seconds between application-level heartbeats on a path that drops a flow after ``survived``
    seconds without payload: the idle ``KeepAlive.for_middlebox`` would probe at (at least 1)."""
    limit = math.floor(survived)
    return max(1, limit - max(2, math.ceil(limit / 10)))


def require_policy(policy: object) -> KeepAlive:
    """``policy`` itself when it is a ``KeepAlive``; a TypeError naming what it is otherwise."""
    if not isinstance(policy, KeepAlive):
        raise policy_error(policy)
    return policy


class KeepAlive:
    """A TCP keepalive policy: immutable, hashable, validated when built.

    ``idle``: seconds of silence before the first probe (Linux/BSD ``TCP_KEEPIDLE``, macOS
    ``TCP_KEEPALIVE``). ``interval``: seconds between probes (``TCP_KEEPINTVL``). ``count``: unanswered
    probes before the connection is dropped (``TCP_KEEPCNT``). Each may be ``None``: the socket's
    current value is left as it is (on a fresh socket, the system default).

    Durations are seconds as ``int``, ``float`` or ``datetime.timedelta``. They are rounded to the
    microsecond, then UP to whole seconds (the kernel's unit), so 0.2 becomes 1 and 1.5 becomes 2;
    a positive value never becomes 0. Zero, negative, NaN and out-of-range values are a
    ``ValueError``; other types a ``TypeError``.

    ``user_timeout``: how long sent data may stay unacknowledged before the connection is
    dropped, in seconds, rounded up to the millisecond (to the second on macOS). Linux
    ``TCP_USER_TIMEOUT`` (which also bounds unanswered keepalive probes); macOS
    ``TCP_RXT_CONNDROPTIME`` and Windows ``TCP_MAXRTMS`` (``TCP_MAXRT`` in seconds where missing)
    bound retransmission of unacknowledged data only, counted from the first retransmission on
    macOS. BSDs have none (``ValueError``). ``"auto"`` sets it to ``detection_time`` where the
    platform has the option and leaves it out elsewhere; 0 restores the system behaviour (not on
    Windows, where 0 would be a zero timeout: ``ValueError``); ``None`` leaves it untouched.
    Keepalive probes are only sent while no data is in flight: without a user timeout, a peer that
    vanishes with data unacknowledged is found by retransmission timeouts (about 15 minutes on
    Linux), not by keepalive.

    ``enabled=False`` makes a policy that turns ``SO_KEEPALIVE`` off; it takes no timing values.
    """

    __slots__ = ("_count", "_enabled", "_idle", "_interval", "_user_timeout_ms", "packed", "spec")

    _idle: int | None
    _interval: int | None
    _count: int | None
    _user_timeout_ms: int | None
    _enabled: bool
    spec: Spec
    """The core protocol's view: the five values as the shim takes them, -1 for "leave as is"."""
    packed: bytes
    """``spec`` packed once as the compiled core's ``ka_policy``, so no call converts it."""

    def __init__(
        self,
        idle: Duration | None = None,
        interval: Duration | None = None,
        count: int | None = None,
        *,
        user_timeout: UserTimeout = None,
        enabled: bool = True,
    ) -> None:
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be True or False, not {type(enabled).__name__} {enabled!r}")
        if not enabled and (idle is not None or interval is not None or count is not None):
            raise ValueError(
                "a disabled policy (enabled=False) takes no idle, interval or count: "
                f"got idle={idle!r}, interval={interval!r}, count={count!r}"
            )
        limits = LIMITS
        idle_s = None if idle is None else whole_seconds("idle", idle, limits.max_idle)
        interval_s = None if interval is None else whole_seconds("interval", interval, limits.max_interval)
        count_n = None if count is None else probe_count(count, limits.max_count)
        check_detection_span(idle_s, interval_s, count_n)

        ut_ms: int | None
        if user_timeout is None:
            ut_ms = None
        elif isinstance(user_timeout, str):
            if user_timeout != "auto":
                raise ValueError(
                    f"user_timeout must be a number of seconds, 'auto', 0 or None, not {user_timeout!r}"
                )
            if idle_s is None or interval_s is None or count_n is None:
                raise ValueError(
                    "user_timeout='auto' derives the timeout from idle + interval * count, so it "
                    f"needs all three: got idle={idle!r}, interval={interval!r}, count={count!r}"
                )
            auto_ms = (idle_s + interval_s * count_n) * 1000
            ut_ms = min(auto_ms, limits.max_user_timeout_ms) if limits.max_user_timeout_ms else None
        else:
            ut_ms = user_timeout_ms(user_timeout, limits.max_user_timeout_ms)

        set_ = object.__setattr__
        set_(self, "_idle", idle_s)
        set_(self, "_interval", interval_s)
        set_(self, "_count", count_n)
        set_(self, "_user_timeout_ms", ut_ms)
        set_(self, "_enabled", enabled)
        spec = Spec(
            1 if enabled else 0,
            LEAVE if idle_s is None else idle_s,
            LEAVE if interval_s is None else interval_s,
            LEAVE if count_n is None else count_n,
            LEAVE if ut_ms is None else ut_ms,
        )
        set_(self, "spec", spec)
        set_(self, "packed", C_POLICY.pack(*spec))

    # -- construction helpers ----------------------------------------------------------------
    @classmethod
    def within(
        cls,
        deadline: Duration,
        *,
        count: int = 3,
        user_timeout: UserTimeout = "auto",
    ) -> KeepAlive:
        """A policy that finds a dead peer within ``deadline`` seconds (at least 2).

        The probes take about a third of the budget (``interval = deadline / (3 * count)``, at least
        1 s) and idle the rest, rounded down so that ``detection_time <= deadline``. Where the
        deadline is too short for ``count`` probes, fewer are used. ``user_timeout="auto"`` (the
        default) makes the promise hold while data is in flight too, where the platform allows.
        """
        total = detection_cap(detection_budget("deadline", deadline))
        idle, interval, probes = fit_budget(total, probe_count(count), LIMITS.max_idle, LIMITS.max_interval)
        return cls(idle, interval, probes, user_timeout=user_timeout)

    @classmethod
    def for_http_idle_timeout(
        cls,
        seconds: Duration,
        *,
        count: int = 3,
        user_timeout: UserTimeout = "auto",
    ) -> KeepAlive:
        """A policy for an HTTP server that closes connections idle for ``seconds``.

        An idle keep-alive connection is closed by the server's own timer after T = ``seconds``
        (rounded up), dead peer or not; keepalive probes carry no data, so they never reset that
        timer. Probing before T would only add traffic. Keepalive matters where the HTTP timer is not
        running (a slow handler, a long poll, a silent stream): there it bounds how long a dead peer
        holds the connection to about the same T. So: ``idle = T`` (capped at the platform maximum),
        ``interval = max(1, T // (3 * count))``, and ``detection_time = T + interval * count``, at
        most about 4/3 T (T + count for T below 3 * count). ``user_timeout="auto"`` (Linux) drops a
        connection whose sent data stays unacknowledged that long; pass None to leave it.
        If a NAT or load balancer with a shorter idle timeout sits in between, use
        ``for_middlebox`` instead.
        """
        total = seconds_up("seconds", seconds)
        probes = probe_count(count)
        interval = min(max(1, total // (3 * probes)), LIMITS.max_interval)
        idle = min(total, LIMITS.max_idle)
        span = idle + interval * probes
        if detection_cap(span) < span:  # macOS, BSD: the kernel adds the three in 32 bits
            idle, interval, probes = fit_budget(detection_cap(span), probes, idle, interval)
        return cls(idle, interval, probes, user_timeout=user_timeout)

    @classmethod
    def for_middlebox(
        cls,
        idle_timeout: Duration,
        *,
        detect_within: Duration | None = None,
        count: int = 3,
        user_timeout: UserTimeout = "auto",
    ) -> KeepAlive:
        """A policy that keeps a NAT or load balancer from forgetting the connection.

        A middlebox drops a flow that carried no packet for ``idle_timeout`` seconds M (whole
        seconds, rounded down; at least 3), often silently (defaults at the time of writing: AWS NLB
        and NAT gateway 350 s, Azure Load Balancer 4 min, GCP VPC firewall tracking 10 min). A probe
        and its ACK refresh the mapping, so the first probe must go out before M:
        ``idle = M - margin`` with ``margin = max(2, ceil(M / 10))`` for timer slack and transit,
        and ``interval = max(1, margin // 2)``, so that a lost first probe is retried before M too
        (``idle + interval < M``; ``interval < M``). ``detection_time = idle + interval * count``.

        ``detect_within``: an upper bound in seconds (rounded down, at least 2) on
        ``detection_time``; where the figures above would exceed it, interval, count and idle are
        lowered to fit, as ``within`` fits them (every middlebox condition still holds). It never
        makes the policy slower.
        """
        limit = seconds_down("idle_timeout", idle_timeout)
        if limit < 3:
            raise ValueError(
                f"idle_timeout={idle_timeout!r} is too short: keeping a mapping alive takes a probe "
                "before the timeout and a retry after it, 1 s apart, so it must be at least 3 seconds"
            )
        probes = probe_count(count)
        margin = max(2, math.ceil(limit / 10))
        idle = min(limit - margin, LIMITS.max_idle)
        interval = min(max(1, margin // 2), LIMITS.max_interval)
        budget = idle + interval * probes
        if detect_within is not None:
            budget = detection_budget("detect_within", detect_within)
        budget = detection_cap(budget)  # macOS, BSD: the kernel adds the three in 32 bits
        if idle + interval * probes > budget:
            idle, interval, probes = fit_budget(budget, probes, idle, interval)
        return cls(idle, interval, probes, user_timeout=user_timeout)

    @classmethod
    def for_path(
        cls,
        path: PathMeasurement,
        *,
        detect_within: Duration | None = None,
        count: int = 3,
        user_timeout: UserTimeout = "auto",
    ) -> KeepAlive:
        """The policy a measured path needs (``ka.probe``'s result: ``KeepAlive.for_path(result)``).

        Where a middlebox dropped the idle flow and keepalive probes kept it open, the policy is
        ``for_middlebox`` of the longest silence the flow is known to survive
        (``path.idle_timeout_low``, not the estimate in the middle of the bracket, so that the
        first probe goes out before the real timeout wherever it lies in the bracket). Where no
        timeout was seen up to ``path.max``, it is ``for_middlebox(path.max)``: a policy that
        probes before ``max`` keeps any longer timeout that counts probes.

        A ValueError where no keepalive policy can help: keepalive probes do not keep the flow
        (a proxy or the service closes it on its own idle timer: the message says how often an
        application-level heartbeat must go), or a measurement cut short that does not tell.
        ``detect_within``, ``count`` and ``user_timeout`` are ``for_middlebox``'s.
        """
        options: dict[str, Any] = {
            "detect_within": detect_within,
            "count": count,
            "user_timeout": user_timeout,
        }
        if path.idle_timeout is None:
            if not path.complete:
                raise ValueError(
                    "the measurement was cut short before it found a timeout or reached its max: "
                    "measure the path again"
                )
            return cls.for_middlebox(path.max, **options)
        survived = path.idle_timeout_low or 0.0
        if path.probes_refresh is None:
            raise ValueError(
                f"the path drops an idle flow after about {round(path.idle_timeout, 1):g} s, but the "
                "measurement did not tell whether keepalive probes keep it open: measure the path again"
            )
        if not path.probes_refresh:
            raise ValueError(
                f"keepalive probes do not keep this path open: it drops a flow after about "
                f"{round(path.idle_timeout, 1):g} s without payload whatever TCP keepalive does; send an "
                f"application-level heartbeat at least every {heartbeat_interval(survived)} s instead"
            )
        if survived < 3:
            raise ValueError(
                f"the path drops an idle flow within {round(path.idle_timeout, 1):g} s: too soon for "
                "keepalive probes, which need a probe before the timeout and a retry after it, 1 s apart"
            )
        return cls.for_middlebox(survived, **options)

    @classmethod
    def disabled(cls) -> KeepAlive:
        """A policy that turns keepalive off."""
        return cls(enabled=False)

    def replace(self, **changes: Any) -> KeepAlive:
        """A copy with some fields changed (same names as the constructor)."""
        fields = self.as_dict()
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"replace() got unknown fields {sorted(unknown)}; it takes {sorted(fields)}")
        fields.update(changes)
        return KeepAlive(**fields)

    # -- values -------------------------------------------------------------------------------
    @property
    def idle(self) -> int | None:
        """Seconds of idle before the first probe, or None (left as is)."""
        return self._idle

    @property
    def interval(self) -> int | None:
        """Seconds between probes, or None (left as is)."""
        return self._interval

    @property
    def count(self) -> int | None:
        """Unanswered probes before the connection is dropped, or None (left as is)."""
        return self._count

    @property
    def user_timeout(self) -> float | None:
        """TCP_USER_TIMEOUT in seconds (millisecond precision), 0.0 for the system's, or None."""
        return None if self._user_timeout_ms is None else self._user_timeout_ms / 1000

    @property
    def user_timeout_ms(self) -> int | None:
        """TCP_USER_TIMEOUT in milliseconds, as the kernel takes it, or None."""
        return self._user_timeout_ms

    @property
    def enabled(self) -> bool:
        """Whether the policy turns SO_KEEPALIVE on."""
        return self._enabled

    @property
    def detection_time(self) -> float | None:
        """Seconds from the last packet heard to a dead peer being dropped: idle + interval * count,
        or where a user timeout is set, the first probe tick at or past it (``ka.units.detection_time``).

        None for a disabled policy, and for a policy that leaves idle, interval or count to the
        socket: ``detection_time_with(ka.system_defaults())`` counts those with the system's.
        This platform's rule: only Linux lets a user timeout cut probing short; on macOS
        (``TCP_RXT_CONNDROPTIME``), Windows and the BSDs it is idle + interval * count whatever
        the user timeout. ``detection_time_with(None, platform="darwin")`` gives another
        platform's figure.
        """
        if self._idle is None or self._interval is None or self._count is None:
            return None
        return self.detection_time_with(None)

    def detection_time_with(self, defaults: Defaults | None, *, platform: str | None = None) -> float | None:
        """``detection_time``, with the fields this policy leaves as they are taken from
        ``defaults`` (such as ``ka.system_defaults()``); None for a disabled policy, or where a
        field is left and no defaults are given. ``platform`` (``"linux"``, ``"darwin"`` or
        ``"macos"``, ``"freebsd"`` or ``"bsd"``, ``"windows"``; this platform by default) picks
        whose rule counts (``ka.units.detection_time``)."""
        if not self._enabled:
            return None
        idle, interval, count = self._idle, self._interval, self._count
        if defaults is not None:
            idle = defaults.idle if idle is None else idle
            interval = defaults.interval if interval is None else interval
            count = defaults.count if count is None else count
        if idle is None or interval is None or count is None:
            return None
        return detection_time(idle, interval, count, self.user_timeout, platform=platform)

    def as_dict(self) -> dict[str, Any]:
        """The policy's fields, as the constructor takes them."""
        return {
            "idle": self._idle,
            "interval": self._interval,
            "count": self._count,
            "user_timeout": self.user_timeout,
            "enabled": self._enabled,
        }

    def setsockopt_calls(self) -> list[tuple[int, int, int]]:
        """The policy as this platform's ``(level, option, value)`` calls, in ka's order, for
        anything that takes socket options (urllib3, httpcore, ...) or ``sock.setsockopt(*call)``.

        ``SO_KEEPALIVE`` first; seconds for idle (``TCP_KEEPALIVE`` on macOS, ``TCP_KEEPIDLE``
        elsewhere) and interval, probes for count; the user timeout is Linux ``TCP_USER_TIMEOUT``
        (ms), macOS ``TCP_RXT_CONNDROPTIME`` (s, rounded up) or Windows ``TCP_MAXRTMS`` (ms). Fields
        left as None are left out. Windows builds older than 10 1709 refuse ``TCP_KEEPIDLE`` (and
        older ones ``TCP_MAXRTMS``): ``ka.apply`` falls back to ``SIO_KEEPALIVE_VALS``/``TCP_MAXRT``
        there. A ValueError where this platform lacks an option the policy sets.
        """
        calls: list[tuple[int, int, int]] = []
        for option, value in self.spec.steps():
            numbers = SOCKET_NUMBERS[option]
            if numbers is None:
                raise ValueError(
                    f"{option.system_name} is not available on this platform, so {self!r} cannot be "
                    "expressed as socket options"
                )
            calls.append((*numbers, user_timeout_value(value) if option is Option.USER_TIMEOUT else value))
        return calls

    # -- value semantics ----------------------------------------------------------------------
    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"KeepAlive is immutable: cannot set {name!r} (use replace())")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"KeepAlive is immutable: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeepAlive):
            return NotImplemented
        return self.spec == other.spec

    def __hash__(self) -> int:
        return hash(("KeepAlive", self.spec))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.as_dict(),))

    def __repr__(self) -> str:
        if not self._enabled:
            extra = "" if self._user_timeout_ms is None else f", user_timeout={self.user_timeout!r}"
            return f"KeepAlive(enabled=False{extra})"
        parts = [f"idle={self._idle!r}", f"interval={self._interval!r}", f"count={self._count!r}"]
        if self._user_timeout_ms is not None:
            parts.append(f"user_timeout={self.user_timeout!r}")
        return f"KeepAlive({', '.join(parts)})"

    # -- the policy as one string (the ``ka`` command, KA_POLICY, server configs) -------------------
    @classmethod
    def parse(cls, text: str) -> KeepAlive:
        """A policy from one string, the ``ka`` command's syntax; ``str(policy)`` is its inverse.

        Parts ``KEY=VALUE`` separated by spaces or commas, keys ``idle``, ``interval`` (durations:
        ``60``, ``1.5``, ``90s``, ``10m``, ``1h30m``, ``500ms``; a bare number is seconds),
        ``count`` (probes) and ``user_timeout`` (a duration, ``auto`` or ``0``)::

            idle=60 interval=10 count=5
            idle=10m,interval=30s,count=4,user_timeout=auto
            within=30s              # KeepAlive.within(30); count= and user_timeout= may follow
            off                     # KeepAlive.disabled()
            on                      # SO_KEEPALIVE on, every value the system's

        Keys may be written with a dash (``user-timeout``); case does not matter. Bad text is a
        ``ValueError`` naming the part and what was expected; values are then checked as the
        constructor checks them (this platform's ranges).
        """
        fields = parse_fields(text)
        try:
            return cls._from_fields(fields)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"keepalive policy {text!r}: {exc}") from None

    @classmethod
    def _from_fields(cls, f: PolicyFields) -> KeepAlive:
        if f.switch == "off":
            timing = sorted(f.given - {"user_timeout"})
            if timing:
                raise ValueError(f"'off' turns keepalive off: it takes no {', '.join(timing)}")
            return cls(enabled=False, user_timeout=f.user_timeout)
        if f.within is not None:
            if f.idle is not None or f.interval is not None:
                raise ValueError("within= derives idle and interval: give within= or idle/interval, not both")
            extra: dict[str, Any] = {} if f.count is None else {"count": f.count}
            if "user_timeout" in f.given:
                extra["user_timeout"] = f.user_timeout
            return cls.within(f.within, **extra)
        return cls(f.idle, f.interval, f.count, user_timeout=f.user_timeout)

    def __str__(self) -> str:
        """The policy in ``KeepAlive.parse``'s syntax, seconds as numbers: ``idle=60 interval=10 count=5``."""
        parts = [] if self.enabled else ["off"]
        for name, value in (("idle", self.idle), ("interval", self.interval), ("count", self.count)):
            if value is not None:
                parts.append(f"{name}={value}")
        if self.user_timeout_ms is not None:
            parts.append(f"user_timeout={format_seconds(self.user_timeout_ms / 1000)}")
        return " ".join(parts) or "on"


def _rebuild(fields: dict[str, Any]) -> KeepAlive:
    return KeepAlive(**fields)


def resolve_policy(policy: KeepAlive | str | None, *, env_var: str = "KA_POLICY") -> KeepAlive:
    """The policy to use: a ``KeepAlive`` as is, a string parsed (``KeepAlive.parse``), or for None
    the policy in the environment variable ``env_var`` (``KA_POLICY`` unless told otherwise).

    A ``ValueError`` when no policy was given and the variable is not set (or empty), or when its
    value is not a policy (the message names the variable); a ``TypeError`` for other types.
    """
    if isinstance(policy, KeepAlive):
        return policy
    if isinstance(policy, str):
        return KeepAlive.parse(policy)
    if policy is not None:
        raise TypeError(
            f"policy must be a ka.KeepAlive, a policy string or None, not {type(policy).__name__} {policy!r}"
        )
    value = os.environ.get(env_var, "")
    if not value.strip():
        state = "is empty" if env_var in os.environ else "is not set"
        raise ValueError(
            f"no keepalive policy was given and the environment variable {env_var} {state}: "
            f'pass a policy, or set {env_var} (e.g. {env_var}="idle=60 interval=10 count=5")'
        )
    try:
        return KeepAlive.parse(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {env_var}: {exc}") from None
