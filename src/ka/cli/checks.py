"""Exit codes, the usage error, and turning command-line values into checked ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .. import _durations as durations

EXIT_OK = 0
EXIT_FAILED = 1  # a socket failed, a check did not hold, nothing matched
EXIT_USAGE = 2  # bad usage or input, found before anything was touched
EXIT_PERMISSION = 3  # missing permission (ptrace over a process, root for a sysctl)
EXIT_UNSUPPORTED = 4  # not supported on this platform
EXIT_READ_ONLY = 5  # the setting lives on a read-only file system (a container's /proc/sys)
# ka audit: no violation found, but a picked process could not be read for a reason other than
# permission (which is EXIT_PERMISSION): the audit is incomplete.
EXIT_UNREADABLE = 6
EXIT_REFUSED = 7  # ka guard: the kernel refused a BPF program or attachment (the verifier, an exclusive one)
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM (128 + SIGINT): ka probe prints what it knew by then

# What ``ka --help`` and docs/cli.md say about each code.
EXIT_CODES = {
    EXIT_OK: "ok",
    EXIT_FAILED: "a socket failed or nothing matched",
    EXIT_USAGE: "bad usage or input",
    EXIT_PERMISSION: "missing permission",
    EXIT_UNSUPPORTED: "not supported on this platform",
    EXIT_READ_ONLY: "the sysctls are read-only here (a container)",
    EXIT_UNREADABLE: "ka audit could not read a process (not for permission)",
    EXIT_REFUSED: "ka guard: the kernel refused the program or the attachment",
    EXIT_INTERRUPTED: "interrupted (ka probe prints what it knew by then)",
}

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
