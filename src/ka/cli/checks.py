"""Exit codes, the usage error, and turning command-line values into checked ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .. import _durations as durations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PERMISSION = 3
EXIT_UNSUPPORTED = 4
EXIT_REFUSED = 5  # the kernel refused a BPF program or attachment (the verifier, an exclusive one)

T = TypeVar("T")


class UsageError(ValueError):
    """A command-line value that makes no sense; exit code 2."""


def validated(check: Callable[..., T], *args: Any) -> T:
    """What ``check(*args)`` returns; its ValueError/TypeError (a bad value) as a UsageError."""
    try:
        return check(*args)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None


def parse_duration(text: str, name: str) -> float:
    """Seconds from ``60``, ``1.5``, ``90s``, ``2m``, ``1h30m``, ``500ms`` (a bare number is seconds)."""
    return validated(durations.parse_duration, text, name)


def seconds(value: float) -> int | float:
    """A whole number of seconds as an int, else as it is."""
    return int(value) if float(value).is_integer() else value
