"""The keepalive policy as one string (the ``ka`` command, ``KA_POLICY``, server configs): its grammar.

``parse_fields`` turns text into the constructor's arguments; ``KeepAlive.parse`` builds the policy
from them and checks the values. A leaf module: durations come from ``_durations``, nothing else.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple, Union

from ._durations import parse_duration

SYNTAX = (
    "idle=DURATION interval=DURATION count=N [user_timeout=DURATION|auto], within=DURATION, "
    "on or off (parts separated by spaces or commas)"
)
KEYS = ("idle", "interval", "count", "user_timeout", "within")
_SEPARATORS = re.compile(r"[\s,]+")
_AROUND_EQUALS = re.compile(r"\s*=\s*")
_MAX_COUNT_DIGITS = 9  # far above any platform's probe limit; KeepAlive checks the real range

Seconds = Union[int, float, None]


class PolicyFields(NamedTuple):
    """What a policy string says: ``switch`` is "on", "off" or None; durations in seconds
    (None where not given); ``user_timeout`` may be "auto"; ``given`` lists the keys written."""

    switch: str | None
    idle: Seconds
    interval: Seconds
    count: int | None  # type: ignore[assignment]  # shadows tuple.count, on purpose
    user_timeout: Seconds | Literal["auto"]
    within: Seconds
    given: frozenset[str]


def parse_fields(text: str) -> PolicyFields:
    """The parts of a policy string; a ValueError naming the bad part and what was expected."""
    if not isinstance(text, str):
        raise TypeError(f"a keepalive policy must be text, not {type(text).__name__} {text!r}")
    parts = [p for p in _SEPARATORS.split(_AROUND_EQUALS.sub("=", text.strip())) if p]
    if not parts:
        raise ValueError(f"keepalive policy {text!r} is empty: expected {SYNTAX}")

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
                part, f"is not KEY=VALUE, on or off: expected {SYNTAX}; durations take no spaces (1h30m)"
            )
        if key not in KEYS:
            raise bad(part, f"names no setting: expected one of {', '.join(KEYS)}")
        if key in values:
            raise bad(part, f"repeats {key} (already {values[key]!r}): expected each setting once")
        if not value:
            raise bad(part, f"has no value: expected {key}=VALUE")
        values[key] = value

    def duration(key: str) -> Seconds:
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
        digits = values["count"]
        # ASCII only: str.isdigit() takes "²", which int() refuses with a message of its own.
        if not (digits.isascii() and digits.isdigit()):
            raise bad(f"count={digits}", "is not a whole number of probes: expected count=5")
        if len(digits.lstrip("0")) > _MAX_COUNT_DIGITS:  # before int(): no 5000-digit conversion
            shown = digits if len(digits) <= 20 else f"{digits[:12]}... ({len(digits)} digits)"
            raise bad(f"count={shown}", "is out of range: expected a count of probes such as count=5")
        count = int(digits)
    user_timeout: Seconds | Literal["auto"] = (
        "auto" if values.get("user_timeout") == "auto" else duration("user_timeout")
    )
    return PolicyFields(
        switch,
        duration("idle"),
        duration("interval"),
        count,
        user_timeout,
        duration("within"),
        frozenset(values),
    )
