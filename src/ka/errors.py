"""The exceptions ka raises for failed system calls."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ._options import Option

if TYPE_CHECKING:
    from .results import BulkResult, Failure


# Winsock errors ka reports on Windows; os.strerror() there answers "Unknown error" for them.
_WSA_NAMES = {
    10004: "WSAEINTR",
    10009: "WSAEBADF",
    10013: "WSAEACCES",
    10014: "WSAEFAULT",
    10022: "WSAEINVAL",
    10038: "WSAENOTSOCK",
    10042: "WSAENOPROTOOPT",
    10045: "WSAEOPNOTSUPP",
    10050: "WSAENETDOWN",
    10093: "WSANOTINITIALISED",
}


def strerror(err: int) -> str:
    """``os.strerror`` for errno values; the Winsock name for a Winsock error (10000 and up)."""
    name = _WSA_NAMES.get(err)
    if name is not None or err >= 10000:
        return f"Winsock error {err} ({name or 'WSAE?'})"
    return os.strerror(err)


def option_error(err: int, fd: int, option: int, action: str = "setting") -> OSError:
    """An ``OSError`` for one failed call, carrying ``errno``, ``fd`` and ``option``.

    ``OSError(errno, message)`` picks the matching subclass (``PermissionError``,
    ``ConnectionResetError``, ...), so callers can catch the usual ones.
    """
    opt = Option(option)
    exc = OSError(err, f"{strerror(err)} ({action} {opt.system_name} on fd {fd})")
    exc.fd = fd  # type: ignore[attr-defined]
    exc.option = opt  # type: ignore[attr-defined]
    return exc


def fileno_failed(where: str, target: Any, what: str, exc: Exception) -> Exception:
    """The error for a target whose ``fileno`` lookup or call raised ``exc`` (chain it with
    ``from exc``): TypeError for a TypeError, else ValueError, naming ``where`` (``targets[3]``)."""
    kind = TypeError if isinstance(exc, TypeError) else ValueError
    return kind(
        f"{where}.{what} raised {type(exc).__name__}: {exc} ({type(target).__name__}): "
        "expected a socket, an int fd or an object with fileno()"
    )


def fileno_not_callable(where: str, target: Any, method: Any) -> TypeError:
    """The error for a target whose ``fileno`` attribute is not callable (``fileno = 3``)."""
    return TypeError(
        f"{where}.fileno is {type(method).__name__} {method!r}, not a method "
        f"({type(target).__name__}): expected a socket, an int fd or an object with fileno()"
    )


class BulkError(OSError):
    """Some inputs of a bulk call failed; ``failures`` lists each one, ``result`` holds them all.

    ``errno`` is the first failure's errno; every failure keeps its own.
    """

    failures: list[Failure]
    result: BulkResult

    def __init__(self, result: BulkResult, *args: Any) -> None:
        failures = result.failed
        first = failures[0]
        shown = ", ".join(
            f"#{f.index} fd {f.fd}: {strerror(f.errno)} on {f.option.system_name}" for f in failures[:5]
        )
        more = f" and {len(failures) - 5} more" if len(failures) > 5 else ""
        super().__init__(
            first.errno,
            f"{len(failures)} of {len(result)} sockets failed ({shown}{more})",
        )
        self.failures = failures
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.result,))
