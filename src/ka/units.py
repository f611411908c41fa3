"""Units and validation of keepalive values: the leaf every policy-shaped thing builds on.

Durations in, whole seconds / probes / milliseconds out, checked against this platform's ranges
(``LIMITS``); the detection-time formula; the budget fitting that ``KeepAlive.within`` and the
middlebox recipe share. No I/O, no ka class: ``policy``, ``system`` and ``results`` all import it.
"""

from __future__ import annotations

import datetime
import math
import numbers
import operator

from ._options import LIMITS, MAX_DETECTION_BY_PLATFORM, PLATFORM

US_PER_S = 1_000_000
US_PER_MS = 1_000

PLATFORM_NAMES = {
    "linux": "Linux",
    "darwin": "macOS",
    "freebsd": "BSD",
    "windows": "Windows",
    "other": "this platform",
}


# Names ``platform_named`` takes besides the keys of PLATFORM_NAMES (sys.platform spellings too).
PLATFORM_ALIASES = {
    "macos": "darwin",
    "bsd": "freebsd",
    "netbsd": "freebsd",
    "openbsd": "freebsd",
    "dragonfly": "freebsd",
    "win32": "windows",
    "cygwin": "other",
}


def platform_name(platform: str | None = None) -> str:
    """A platform's name in messages ("Linux", "macOS", ...); this one's (PLATFORM, read when
    asked) by default."""
    return PLATFORM_NAMES[PLATFORM if platform is None else platform]


def platform_named(name: str | None) -> str:
    """The platform key (``linux``, ``darwin``, ``freebsd``, ``windows``, ``other``) for ``name``:
    a key, ``macos``, ``bsd``, ``win32`` or a ``sys.platform`` value; None means this platform."""
    if name is None:
        return PLATFORM
    if not isinstance(name, str):
        raise TypeError(f"platform must be a str or None, not {type(name).__name__} {name!r}")
    key = name.lower()
    if key not in PLATFORM_NAMES and key not in PLATFORM_ALIASES:
        key = key.rstrip("0123456789")  # sys.platform spellings: freebsd14, linux2
    key = PLATFORM_ALIASES.get(key, key)
    if key not in PLATFORM_NAMES:
        known = ", ".join(sorted({*PLATFORM_NAMES, *PLATFORM_ALIASES}))
        raise ValueError(f"platform={name!r} is not a platform ka knows: expected one of {known}")
    return key


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
        us = int(value) * US_PER_S
    else:
        try:
            f = float(value)
        except OverflowError:  # a Real beyond float range (a huge Fraction): exact, and out of range
            f = None
        if f is None:
            us = int(value) * US_PER_S  # type: ignore[call-overload]
        elif math.isnan(f) or math.isinf(f):
            raise ValueError(f"{field} must be a finite number of seconds, not {value!r}")
        else:
            scaled = f * US_PER_S
            # A finite float can overflow when scaled (1e303 s): count it exactly; the range check follows.
            us = int(f) * US_PER_S if math.isinf(scaled) else round(scaled)
            if us == 0 and f > 0:
                us = 1  # never let rounding turn a positive value into 0
    if check_sign and us <= 0:
        raise ValueError(f"{field} must be positive, not {value!r}")
    return us


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def seconds_up(field: str, value: object) -> int:
    """A positive duration as whole seconds, rounded up (never to 0)."""
    return ceil_div(microseconds(field, value), US_PER_S)


def seconds_down(field: str, value: object) -> int:
    """A positive duration as whole seconds, rounded down (0.5 s is 0)."""
    return microseconds(field, value) // US_PER_S


def whole_seconds(field: str, value: object, maximum: int) -> int:
    """Seconds rounded up (never to 0), checked against [1, maximum]."""
    seconds = seconds_up(field, value)
    if seconds > maximum:
        raise ValueError(
            f"{field}={value!r} is out of range: {field} takes 1 to {maximum} seconds on {platform_name()}"
        )
    return seconds


def probe_count(value: object, maximum: int = LIMITS.max_count) -> int:
    """A number of probes, checked against [1, maximum]."""
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
            f"count={value!r} is out of range: count takes 1 to {maximum} probes on {platform_name()}"
        )
    return count


def user_timeout_ms(value: object, maximum: int) -> int:
    """A user timeout in milliseconds, rounded up (to the second on macOS); 0 restores the system's
    behaviour (refused on Windows, where 0 is a zero timeout)."""
    if maximum == 0:
        raise ValueError(
            f"user_timeout={value!r} cannot be set: {platform_name()} has no user "
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
    ms = ceil_div(microseconds("user_timeout", value), US_PER_MS)
    if PLATFORM == "darwin":  # TCP_RXT_CONNDROPTIME takes whole seconds: round up, as the shim does
        ms = ceil_div(ms, 1000) * 1000
    if ms > maximum:
        raise ValueError(
            f"user_timeout={value!r} is out of range: user_timeout takes 0.001 to "
            f"{maximum / 1000:g} seconds on {platform_name()}"
        )
    return ms


def detection_time(
    idle: float,
    interval: float,
    count: int,
    user_timeout: float | None = None,
    *,
    platform: str | None = None,
) -> float:
    """Seconds of silence after which the kernel drops a connection with these keepalive values,
    on ``platform`` (a ``platform_named`` name; this platform by default).

    idle + interval * count everywhere. Only Linux lets a user timeout (``TCP_USER_TIMEOUT``, in
    seconds) cut keepalive short: its keepalive timer then ignores count and drops the connection
    at the first probe tick at or past the user timeout, once at least one probe went out
    (net/ipv4/tcp_timer.c ``tcp_keepalive_timer``): idle + interval * max(1, ceil((user_timeout -
    idle) / interval)). macOS checks ``TCP_RXT_CONNDROPTIME`` in the retransmit timer only (xnu
    bsd/netinet/tcp_timer.c ``tcp_timers``, TCPT_REXMT), never in the keepalive timer (TCPT_KEEP);
    Windows documents ``TCP_MAXRT`` as a retransmission timeout; the BSDs have no user timeout.
    """
    if platform_named(platform) != "linux" or not user_timeout:
        return float(idle + interval * count)
    return float(idle + interval * max(1, math.ceil((user_timeout - idle) / interval)))


def check_detection_span(
    idle: int | None, interval: int | None, count: int | None, platform: str | None = None
) -> None:
    """Refuse idle + interval * count beyond what the platform's keepalive timer adds without
    wrapping (``MAX_DETECTION_BY_PLATFORM``), where it adds them in 32 bits (macOS, BSD): a larger
    sum wraps and the kernel drops the connection at the first expiry. Fields left as None count
    as 0 (the socket's own values are not known here)."""
    key = platform_named(platform)
    maximum = MAX_DETECTION_BY_PLATFORM[key]
    span = (idle or 0) + (interval * count if interval is not None and count is not None else 0)
    if maximum is not None and span > maximum:
        unit = "milliseconds" if key == "darwin" else "timer ticks"
        raise ValueError(
            f"idle + interval * count = {idle} + {interval} * {count} = {span} s is out of range: "
            f"{platform_name(key)} adds them as unsigned 32-bit {unit}, so the sum takes at most "
            f"{maximum} s (a larger one wraps and drops the connection at the first expiry)"
        )


def detection_budget(field: str, value: object) -> int:
    """A deadline for finding a dead peer, in whole seconds rounded down: at least 2."""
    total = seconds_down(field, value)
    if total < 2:
        raise ValueError(
            f"{field}={value!r} is too short: a dead peer takes at least 2 seconds to find "
            "(1 s idle, then one 1 s probe)"
        )
    return total


def detection_cap(budget: int, platform: str | None = None) -> int:
    """``budget`` (seconds) lowered to the longest idle + interval * count the platform's
    keepalive timer holds (``MAX_DETECTION_BY_PLATFORM``): what the recipes fit a policy into."""
    maximum = MAX_DETECTION_BY_PLATFORM[platform_named(platform)]
    return budget if maximum is None else min(budget, maximum)


def fit_budget(budget: int, probes: int, idle_cap: int, interval_cap: int) -> tuple[int, int, int]:
    """(idle, interval, count) with ``idle + interval * count <= budget`` (``budget`` >= 2): the
    probes take about a third of it (interval ``budget // (3 * count)``, at least 1 s, at most
    ``interval_cap``), idle the rest (at most ``idle_cap``); fewer probes where ``count`` do not fit."""
    probes = min(probes, budget - 1)
    interval = max(1, min(budget // (3 * probes), interval_cap))
    idle = min(budget - interval * probes, idle_cap)
    return idle, interval, probes
