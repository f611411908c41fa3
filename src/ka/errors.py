"""The errors ka raises: failed system calls (``option_error``) and bad input, with every message
built here, on the error path only, for the compiled core and the twin alike."""

from __future__ import annotations

import os
from typing import Any

from ._options import Option

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


_EXPECTED = "expected a socket, an int fd or an object with fileno()"
# problem -> (exception type, message); fields: where, target, kind (its type's name), value,
# vkind (the value's type's name). "lookup"/"call" take their type from the exception raised.
_TARGET_PROBLEMS: dict[str, tuple[type[Exception] | None, str]] = {
    "bool": (TypeError, "{where} is a bool ({target!r}): " + _EXPECTED),
    "range": (ValueError, "{where} is {target}: not a descriptor number"),
    "c-int": (ValueError, "{where} is {target}: not a descriptor number (expected a C int)"),
    "no-fileno": (TypeError, "{where} is {kind} {target!r}: " + _EXPECTED),
    "lookup": (None, "{where}.fileno raised {vkind}: {value} ({kind}): " + _EXPECTED),
    "call": (None, "{where}.fileno() raised {vkind}: {value} ({kind}): " + _EXPECTED),
    "not-callable": (TypeError, "{where}.fileno is {vkind} {value!r}, not a method ({kind}): " + _EXPECTED),
    "returned-type": (TypeError, "{where}.fileno() returned {vkind} {value!r}, expected an int"),
    "returned-range": (ValueError, "{where}.fileno() returned {value}: not a descriptor number"),
    "returned-c-int": (
        ValueError,
        "{where}.fileno() returned {value}: not a descriptor number (expected a C int)",
    ),
}


def target_error(where: str, target: Any, problem: str, value: Any = None) -> Exception:
    """The TypeError or ValueError for one bad target, named by ``where`` (``target``,
    ``targets[3]``). Both cores build their messages here, on the error path only.

    ``problem``: ``bool``, ``range`` (an int beyond any descriptor), ``c-int`` (beyond a C int),
    ``no-fileno``, ``lookup`` / ``call`` (getting or calling ``fileno`` raised ``value``: chain it
    with ``from``), ``not-callable`` (``value`` is the attribute), or ``returned-type``,
    ``returned-range``, ``returned-c-int`` (``fileno()`` returned ``value``).
    """
    error, template = _TARGET_PROBLEMS[problem]
    if error is None:
        error = TypeError if isinstance(value, TypeError) else ValueError
    message = template.format(
        where=where, target=target, kind=type(target).__name__, value=value, vkind=type(value).__name__
    )
    return error(message)


def targets_error(targets: Any) -> TypeError:
    """The error for ``targets`` that are no collection of targets (a str, an int, ...)."""
    return TypeError(
        "targets must be a sequence or iterable of sockets or fds, or an integer array, "
        f"not {type(targets).__name__}"
    )


def buffer_error(fmt: str, itemsize: int, ndim: int) -> TypeError:
    """The error for a buffer of descriptors in a shape ka does not take."""
    return TypeError(
        "a buffer of descriptors must be one-dimensional 4- or 8-byte integers "
        f"(array('i'), array('q'), numpy int32/int64), not format {fmt!r} with itemsize {itemsize} "
        f"and {ndim} dimensions"
    )


def policy_error(policy: Any) -> TypeError:
    """The error for a policy argument that is no ``ka.KeepAlive``."""
    return TypeError(f"policy must be a ka.KeepAlive, not {type(policy).__name__} {policy!r}")
