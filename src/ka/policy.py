"""KeepAlive: the values of a keepalive policy, their validation, units and rounding.

Every check happens when a policy is built, so ``apply`` never reaches the kernel with a value
it would refuse. Ranges are this platform's (see ``ka.capabilities()``).
"""

from __future__ import annotations

import datetime
import math
import numbers
import operator
import os
import re
import struct
from typing import Any, Literal, Union

from ._durations import format_seconds, parse_duration
from ._options import LIMITS, PLATFORM

Duration = Union[int, float, datetime.timedelta]
UserTimeout = Union[Duration, Literal["auto"], None]

_US_PER_S = 1_000_000
_US_PER_MS = 1_000
_LEAVE = -1
# The compiled core's ka_policy struct: five C ints (enable, idle, interval, count, user timeout ms).
C_POLICY = struct.Struct("=5i")

_PLATFORM_NAMES = {
    "linux": "Linux",
    "darwin": "macOS",
    "freebsd": "BSD",
    "windows": "Windows",
    "other": "this platform",
}


def microseconds(field: str, value: object, *, check_sign: bool = True) -> int:
    """A duration in seconds (int, float, timedelta) as whole microseconds, checked for sign
    (``check_sign=False``: any sign, for callers that check a range of their own).

    Floats are first rounded to the microsecond, so 0.1 * 3 counts as 0.3 s, not a hair more.
    ``field`` names the value in the TypeError/ValueError raised for a non-duration.
    """
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, datetime.timedelta)):
        raise TypeError(
            f"{field} must be a number of seconds (int, float) or a datetime.timedelta, "
            f"not {type(value).__name__} {value!r}"
        )
    if isinstance(value, datetime.timedelta):
        us = value // datetime.timedelta(microseconds=1)
    elif isinstance(value, numbers.Integral):
        us = int(value) * _US_PER_S
    else:
        try:
            f = float(value)
        except OverflowError:  # a Real beyond float range (a huge Fraction): exact, and out of range
            f = None
        if f is None:
            us = int(value) * _US_PER_S  # type: ignore[call-overload]
        elif math.isnan(f) or math.isinf(f):
            raise ValueError(f"{field} must be a finite number of seconds, not {value!r}")
        else:
            scaled = f * _US_PER_S
            # A finite float can overflow when scaled (1e303 s): count it exactly; the range check follows.
            us = int(f) * _US_PER_S if math.isinf(scaled) else round(scaled)
            if us == 0 and f > 0:
                us = 1  # never let rounding turn a positive value into 0
    if check_sign and us <= 0:
        raise ValueError(f"{field} must be positive, not {value!r}")
    return us


def detection_time(idle: float, interval: float, count: int, user_timeout: float | None = None) -> float:
    """Seconds of silence after which the kernel drops a connection with these keepalive values.

    Without a user timeout: idle + interval * count. With one (Linux ``TCP_USER_TIMEOUT``, in
    seconds), the keepalive timer ignores count and drops the connection at the first probe tick
    at or past the user timeout, once at least one probe went out (``tcp_keepalive_timer``):
    idle + interval * max(1, ceil((user_timeout - idle) / interval)).
    """
    if not user_timeout:
        return float(idle + interval * count)
    return float(idle + interval * max(1, math.ceil((user_timeout - idle) / interval)))


def require_policy(policy: object) -> KeepAlive:
    """``policy`` itself when it is a ``KeepAlive``; a TypeError naming what it is otherwise."""
    if not isinstance(policy, KeepAlive):
        raise TypeError(f"policy must be a ka.KeepAlive, not {type(policy).__name__} {policy!r}")
    return policy


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _whole_seconds(field: str, value: object, maximum: int) -> int:
    """Seconds rounded up (never to 0), checked against [1, maximum]."""
    seconds = _ceil_div(microseconds(field, value), _US_PER_S)
    if seconds > maximum:
        raise ValueError(
            f"{field}={value!r} is out of range: {field} takes 1 to {maximum} seconds "
            f"on {_PLATFORM_NAMES[PLATFORM]}"
        )
    return seconds


def _probe_count(value: object, maximum: int) -> int:
    if isinstance(value, (bool, float)):
        raise TypeError(f"count must be a whole number of probes (int), not {type(value).__name__} {value!r}")
    try:
        count = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"count must be a whole number of probes (int), not {type(value).__name__} {value!r}"
        ) from None
    if not 1 <= count <= maximum:
        raise ValueError(
            f"count={value!r} is out of range: count takes 1 to {maximum} probes "
            f"on {_PLATFORM_NAMES[PLATFORM]}"
        )
    return count


def _user_timeout_ms(value: object, maximum: int) -> int:
    if maximum == 0:
        raise ValueError(
            f"user_timeout={value!r} cannot be set: {_PLATFORM_NAMES[PLATFORM]} has no user "
            "timeout option (use user_timeout=None, or 'auto' to set it only where supported)"
        )
    zero = datetime.timedelta(0) if isinstance(value, datetime.timedelta) else 0
    is_duration = isinstance(value, (numbers.Real, datetime.timedelta)) and not isinstance(value, bool)
    if is_duration and value == zero:
        if PLATFORM == "windows":  # TCP_MAXRT takes 0 as a zero-second timeout, not "the default"
            raise ValueError(
                "user_timeout=0 cannot restore the system's behaviour on Windows: TCP_MAXRT/"
                "TCP_MAXRTMS take 0 as a zero timeout (use None to leave it untouched)"
            )
        return 0  # 0 restores the system's behaviour (no user timeout)
    ms = _ceil_div(microseconds("user_timeout", value), _US_PER_MS)
    if PLATFORM == "darwin":  # TCP_RXT_CONNDROPTIME takes whole seconds: round up, as the shim does
        ms = _ceil_div(ms, 1000) * 1000
    if ms > maximum:
        raise ValueError(
            f"user_timeout={value!r} is out of range: user_timeout takes 0.001 to "
            f"{maximum / 1000:g} seconds on {_PLATFORM_NAMES[PLATFORM]}"
        )
    return ms


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

    __slots__ = ("_c", "_count", "_enabled", "_idle", "_interval", "_spec", "_user_timeout_ms")

    _idle: int | None
    _interval: int | None
    _count: int | None
    _user_timeout_ms: int | None
    _enabled: bool
    _spec: tuple[int, int, int, int, int]
    _c: bytes  # _spec packed as the compiled core's ka_policy, once, so no call converts it

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
        idle_s = None if idle is None else _whole_seconds("idle", idle, limits.max_idle)
        interval_s = None if interval is None else _whole_seconds("interval", interval, limits.max_interval)
        count_n = None if count is None else _probe_count(count, limits.max_count)

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
            ut_ms = _user_timeout_ms(user_timeout, limits.max_user_timeout_ms)

        set_ = object.__setattr__
        set_(self, "_idle", idle_s)
        set_(self, "_interval", interval_s)
        set_(self, "_count", count_n)
        set_(self, "_user_timeout_ms", ut_ms)
        set_(self, "_enabled", enabled)
        spec = (
            1 if enabled else 0,
            _LEAVE if idle_s is None else idle_s,
            _LEAVE if interval_s is None else interval_s,
            _LEAVE if count_n is None else count_n,
            _LEAVE if ut_ms is None else ut_ms,
        )
        set_(self, "_spec", spec)
        set_(self, "_c", C_POLICY.pack(*spec))

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
        total = microseconds("deadline", deadline) // _US_PER_S
        if total < 2:
            raise ValueError(
                f"deadline={deadline!r} is too short: a dead peer takes at least 2 seconds to find "
                "(1 s idle, then one 1 s probe)"
            )
        probes = _probe_count(count, LIMITS.max_count)
        probes = min(probes, total - 1)
        interval = max(1, min(total // (3 * probes), LIMITS.max_interval))
        idle = min(total - interval * probes, LIMITS.max_idle)
        return cls(idle, interval, probes, user_timeout=user_timeout)

    @classmethod
    def disabled(cls) -> KeepAlive:
        """A policy that turns keepalive off."""
        return cls(enabled=False)

    def replace(self, **changes: Any) -> KeepAlive:
        """A copy with some fields changed (same names as the constructor)."""
        fields: dict[str, Any] = {
            "idle": self._idle,
            "interval": self._interval,
            "count": self._count,
            "user_timeout": None if self._user_timeout_ms is None else self._user_timeout_ms / 1000,
            "enabled": self._enabled,
        }
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
        or where a user timeout is set, the first probe tick at or past it (see ``detection_time``).

        Fields left as None count with the system defaults (``ka.system_defaults()``). None for a
        disabled policy.
        """
        if not self._enabled:
            return None
        idle, interval, count = self._idle, self._interval, self._count
        if idle is None or interval is None or count is None:
            from .system import system_defaults

            defaults = system_defaults()
            idle = defaults.idle if idle is None else idle
            interval = defaults.interval if interval is None else interval
            count = defaults.count if count is None else count
        return detection_time(idle, interval, count, self.user_timeout)

    def as_dict(self) -> dict[str, Any]:
        """The policy's fields, as the constructor takes them."""
        return {
            "idle": self._idle,
            "interval": self._interval,
            "count": self._count,
            "user_timeout": self.user_timeout,
            "enabled": self._enabled,
        }

    # -- value semantics ----------------------------------------------------------------------
    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"KeepAlive is immutable: cannot set {name!r} (use replace())")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"KeepAlive is immutable: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeepAlive):
            return NotImplemented
        return self._spec == other._spec

    def __hash__(self) -> int:
        return hash(("KeepAlive", self._spec))

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
        return parse_policy(text)

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


# -- KeepAlive.parse and KA_POLICY ------------------------------------------------------------------

_POLICY_SYNTAX = (
    "idle=DURATION interval=DURATION count=N [user_timeout=DURATION|auto], within=DURATION, "
    "on or off (parts separated by spaces or commas)"
)
_POLICY_KEYS = ("idle", "interval", "count", "user_timeout", "within")
_SEPARATORS = re.compile(r"[\s,]+")
_AROUND_EQUALS = re.compile(r"\s*=\s*")


def parse_policy(text: str) -> KeepAlive:
    """``KeepAlive.parse(text)``: see there for the syntax."""
    if not isinstance(text, str):
        raise TypeError(f"a keepalive policy must be text, not {type(text).__name__} {text!r}")
    parts = [p for p in _SEPARATORS.split(_AROUND_EQUALS.sub("=", text.strip())) if p]
    if not parts:
        raise ValueError(f"keepalive policy {text!r} is empty: expected {_POLICY_SYNTAX}")

    def bad(part: str, problem: str) -> ValueError:
        return ValueError(f"keepalive policy {text!r}: part {part!r} {problem}")

    switch: str | None = None
    values: dict[str, str] = {}
    for part in parts:
        word = part.lower()
        if word in ("on", "off"):
            if switch is not None:
                raise bad(part, f"contradicts or repeats {switch!r}: expected on or off once")
            switch = word
            continue
        key, sep, value = word.partition("=")
        key = key.replace("-", "_")
        if not sep:
            raise bad(
                part,
                f"is not KEY=VALUE, on or off: expected {_POLICY_SYNTAX}; durations take no spaces (1h30m)",
            )
        if key not in _POLICY_KEYS:
            raise bad(part, f"names no setting: expected one of {', '.join(_POLICY_KEYS)}")
        if key in values:
            raise bad(part, f"repeats {key} (already {values[key]!r}): expected each setting once")
        if not value:
            raise bad(part, f"has no value: expected {key}=VALUE")
        values[key] = value

    def duration(key: str) -> int | float | None:
        if key not in values:
            return None
        try:
            seconds = parse_duration(values[key], key)
        except ValueError:
            raise bad(
                f"{key}={values[key]}",
                "is not a duration: expected seconds (60, 1.5) or 500ms, 90s, 10m, 1h30m",
            ) from None
        return int(seconds) if seconds.is_integer() else seconds

    count: int | None = None
    if "count" in values:
        if not values["count"].isdigit():
            raise bad(f"count={values['count']}", "is not a whole number of probes: expected count=5")
        count = int(values["count"])
    idle, interval, deadline = duration("idle"), duration("interval"), duration("within")
    user_timeout: UserTimeout = "auto" if values.get("user_timeout") == "auto" else duration("user_timeout")
    try:
        if switch == "off":
            timing = sorted(values.keys() - {"user_timeout"})
            if timing:
                raise ValueError(f"'off' turns keepalive off: it takes no {', '.join(timing)}")
            return KeepAlive(enabled=False, user_timeout=user_timeout)
        if deadline is not None:
            if idle is not None or interval is not None:
                raise ValueError("within= derives idle and interval: give within= or idle/interval, not both")
            extra: dict[str, Any] = {} if count is None else {"count": count}
            if "user_timeout" in values:
                extra["user_timeout"] = user_timeout
            return KeepAlive.within(deadline, **extra)
        return KeepAlive(idle, interval, count, user_timeout=user_timeout)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"keepalive policy {text!r}: {exc}") from None


def resolve_policy(policy: KeepAlive | str | None, *, env_var: str = "KA_POLICY") -> KeepAlive:
    """The policy to use: a ``KeepAlive`` as is, a string parsed (``KeepAlive.parse``), or for None
    the policy in the environment variable ``env_var`` (``KA_POLICY`` unless told otherwise).

    A ``ValueError`` when no policy was given and the variable is not set (or empty), or when its
    value is not a policy (the message names the variable); a ``TypeError`` for other types.
    """
    if isinstance(policy, KeepAlive):
        return policy
    if isinstance(policy, str):
        return parse_policy(policy)
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
        return parse_policy(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {env_var}: {exc}") from None
