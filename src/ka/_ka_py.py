"""The pure-Python twin of the compiled core: the same functions over the stdlib socket module.

Used on PyPy and other non-CPython implementations, and where ``KA_NO_EXTENSIONS`` is set.
Every function returns what ``_ka_c`` returns for the same input, including which option failed.
The ``threads`` argument is accepted and ignored: the GIL would serialise the calls anyway.
"""

from __future__ import annotations

import _socket
import array
import errno
import socket
from collections.abc import Iterable
from typing import Any

from ._borrow import borrowed_call
from ._options import LIMITS as _LIMITS
from ._options import PLATFORM, PLATFORM_CODES, SOCKET_NUMBERS, Option, spec_steps
from .errors import option_error
from .policy import KeepAlive, require_policy
from .results import KeepAliveSettings, settings_of

IMPLEMENTATION = "python"
PLATFORM_CODE = PLATFORM_CODES[PLATFORM]
LIMITS = tuple(_LIMITS)
HAVE = tuple(
    SOCKET_NUMBERS[o] is not None for o in (Option.IDLE, Option.INTERVAL, Option.COUNT, Option.USER_TIMEOUT)
)

_FD_TYPECODE = "q" if PLATFORM == "windows" else "i"
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_ENOPROTOOPT = (
    getattr(errno, "WSAENOPROTOOPT", errno.ENOPROTOOPT) if PLATFORM == "windows" else errno.ENOPROTOOPT
)
_MISSING_ON_WINDOWS = {getattr(errno, "WSAENOPROTOOPT", -1), getattr(errno, "WSAEINVAL", -1)}
_WINDOWS = PLATFORM == "windows"
_BAD_FD = getattr(errno, "WSAENOTSOCK", 10038) if _WINDOWS else errno.EBADF
_BUFFER_FORMATS = {"i", "l", "q", "n", "I", "L", "Q", "N"}


def _check_fd(fd: int, where: str, via_fileno: bool = False) -> int:
    if not _WINDOWS and not _INT_MIN <= fd <= _INT_MAX:
        what = f"{where}.fileno() returned" if via_fileno else f"{where} is"
        raise ValueError(f"{what} {fd}: not a descriptor number (expected a C int)")
    return fd


def _fileno_failed(where: str, target: Any, what: str, exc: Exception) -> Exception:
    """The error for an entry whose fileno raised: TypeError for a TypeError, else ValueError."""
    kind = TypeError if isinstance(exc, TypeError) else ValueError
    return kind(
        f"{where}.{what} raised {type(exc).__name__}: {exc} ({type(target).__name__}): "
        "expected a socket, an int fd or an object with fileno()"
    )


def _fileno(target: Any, where: str) -> int:
    if isinstance(target, bool):
        raise TypeError(
            f"{where} is a bool ({target!r}): expected a socket, an int fd or an object with fileno()"
        )
    if isinstance(target, int):
        if not -(2**63) <= target < 2**63:
            raise ValueError(f"{where} is {target}: not a descriptor number")
        return _check_fd(int(target), where)
    try:
        method = getattr(target, "fileno", None)
    except Exception as exc:
        raise _fileno_failed(where, target, "fileno", exc) from exc
    if method is None:
        raise TypeError(
            f"{where} is {type(target).__name__} {target!r}: expected a socket, an int fd or an "
            "object with fileno()"
        )
    if not callable(method):
        raise TypeError(
            f"{where}.fileno is {type(method).__name__} {method!r}, not a method "
            f"({type(target).__name__}): expected a socket, an int fd or an object with fileno()"
        )
    try:
        value = method()
    except Exception as exc:
        raise _fileno_failed(where, target, "fileno()", exc) from exc
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}.fileno() returned {type(value).__name__} {value!r}, expected an int")
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{where}.fileno() returned {value}: not a descriptor number")
    return _check_fd(int(value), where, via_fileno=True)


def fileno_of(target: Any) -> int:
    """The descriptor number ka would use for ``target``."""
    return _fileno(target, "target")


def _windows_keepalive_vals(sock: _socket.socket, spec: tuple[int, int, int, int, int]) -> None:
    enable, idle, interval = spec[0], spec[1], spec[2]
    idle_ms = idle * 1000 if idle >= 0 else 7_200_000
    interval_ms = interval * 1000 if interval >= 0 else 1000
    sock.ioctl(socket.SIO_KEEPALIVE_VALS, (enable, idle_ms, interval_ms))  # type: ignore[attr-defined]


def _apply_sock(sock: _socket.socket, spec: tuple[int, int, int, int, int]) -> tuple[int, int]:
    """(errno, option) of the first failing call, or (0, 0)."""
    use_ioctl = False
    for option, value in spec_steps(spec):
        numbers = SOCKET_NUMBERS[option]
        if numbers is None:
            return _ENOPROTOOPT, option
        if use_ioctl and option is Option.INTERVAL:
            continue
        if option is Option.KEEPALIVE and use_ioctl:
            try:
                _windows_keepalive_vals(sock, spec)
            except OSError as exc:
                return _errno_of(exc), Option.IDLE
        try:
            sock.setsockopt(numbers[0], numbers[1], value)
        except OSError as exc:
            err = _errno_of(exc)
            if _WINDOWS and option in (Option.IDLE, Option.INTERVAL) and err in _MISSING_ON_WINDOWS:
                use_ioctl = True
                continue
            return err, option
    return 0, 0


def _errno_of(exc: OSError) -> int:
    return exc.errno if exc.errno is not None else errno.EINVAL


def _first_option(spec: tuple[int, int, int, int, int]) -> Option:
    return spec_steps(spec)[0][0]


def _apply_fd(fd: int, target: Any, spec: tuple[int, int, int, int, int]) -> tuple[int, int]:
    if isinstance(target, socket.socket) and target.fileno() == fd:
        return _apply_sock(target, spec)
    if fd < 0:  # what the kernel answers for a negative descriptor
        return _BAD_FD, _first_option(spec)
    try:
        return borrowed_call(fd, lambda sock: _apply_sock(sock, spec))
    except OSError as exc:  # not a socket, or not open: the first call would have failed so
        return _errno_of(exc), _first_option(spec)


def apply(target: Any, policy: KeepAlive) -> None:
    """Apply ``policy`` to one socket: a ``socket.socket``, an int fd, or anything with ``fileno()``.

    Raises ``OSError`` (the errno's own subclass) with ``errno``, ``fd`` and ``option`` (a
    ``ka.Option``) when a call fails; the options before it stay applied (order: idle, interval,
    count, user timeout, SO_KEEPALIVE).
    """
    spec = require_policy(policy)._spec
    fd = _fileno(target, "target")
    err, option = _apply_fd(fd, target, spec)
    if err:
        raise option_error(err, fd, option, "setting")


_READ_ORDER = (Option.KEEPALIVE, Option.IDLE, Option.INTERVAL, Option.COUNT, Option.USER_TIMEOUT)


def _read_sock(sock: _socket.socket) -> tuple[int, int, tuple[int, int, int, int, int]]:
    values = [-1, -1, -1, -1, -1]
    for k, option in enumerate(_READ_ORDER):
        numbers = SOCKET_NUMBERS[option]
        if numbers is None:
            continue
        try:
            value = sock.getsockopt(numbers[0], numbers[1])
        except OSError as exc:
            err = _errno_of(exc)
            if _WINDOWS and option is not Option.KEEPALIVE and err in _MISSING_ON_WINDOWS:
                continue
            return err, option, (values[0], values[1], values[2], values[3], values[4])
        values[k] = (1 if value else 0) if option is Option.KEEPALIVE else value
    return 0, 0, (values[0], values[1], values[2], values[3], values[4])


_UNREAD = (-1, -1, -1, -1, -1)


def _read_fd(fd: int, target: Any) -> tuple[int, int, tuple[int, int, int, int, int]]:
    if isinstance(target, socket.socket) and target.fileno() == fd:
        return _read_sock(target)
    if fd < 0:
        return _BAD_FD, Option.KEEPALIVE, _UNREAD
    try:
        return borrowed_call(fd, _read_sock)
    except OSError as exc:  # not a socket, or not open: the first call would have failed so
        return _errno_of(exc), Option.KEEPALIVE, _UNREAD


def read(target: Any) -> KeepAliveSettings:
    """One socket's keepalive values as the kernel reports them (on Linux, the sysctl defaults
    for any value never set; elsewhere ``ka.system_defaults()`` fills what the OS cannot tell).

    Raises ``OSError`` with ``fd`` and ``option`` on failure.
    """
    fd = _fileno(target, "target")
    err, option, values = _read_fd(fd, target)
    if err:
        raise option_error(err, fd, option, "reading")
    return settings_of(values)


def _buffer_fds(targets: Any) -> array.array[int] | None:
    """An owned fd array from a 1-D integer buffer (any stride), or None for a non-buffer."""
    try:
        view = memoryview(targets)
    except TypeError:
        return None
    with view:
        fmt = view.format.lstrip("@=")
        if view.ndim != 1 or fmt not in _BUFFER_FORMATS or view.itemsize not in (4, 8):
            raise TypeError(
                "a buffer of descriptors must be one-dimensional 4- or 8-byte integers "
                "(array('i'), array('q'), numpy int32/int64), not format "
                f"{fmt!r} with itemsize {view.itemsize} and {view.ndim} dimensions"
            )
        # tobytes copies any stride; memoryview.tolist() refuses "=i" (numpy structured fields)
        signed = fmt not in ("I", "L", "Q", "N")
        code = ("i" if signed else "I") if view.itemsize == 4 else ("q" if signed else "Q")
        values = array.array(code, view.tobytes())
    for i, value in enumerate(values):
        if value >= 2**63:
            raise ValueError(f"targets[{i}] is {value}: not a descriptor number")
        _check_fd(value, f"targets[{i}]")
    return array.array(_FD_TYPECODE, values)


def _materialize(targets: Any) -> Any:
    """A buffer as it is; a tuple as it is; any other iterable as a tuple (a snapshot the caller
    cannot change during the call, as the compiled core takes); anything else an error."""
    text = isinstance(targets, (str, bytes, bytearray))
    if text or not (isinstance(targets, Iterable) or _is_buffer(targets)):
        raise TypeError(
            "targets must be a sequence or iterable of sockets or fds, or an integer array, "
            f"not {type(targets).__name__}"
        )
    if type(targets) is tuple or _is_buffer(targets):
        return targets
    return tuple(targets)


def collect_fds(targets: Any) -> array.array[int]:
    """Every target as a descriptor number, in an owned array ('i', or 'q' on Windows)."""
    targets = _materialize(targets)
    fds = _buffer_fds(targets)
    if fds is not None:
        return fds
    return array.array(_FD_TYPECODE, [_fileno(t, f"targets[{i}]") for i, t in enumerate(targets)])


def _prepare(
    targets: Any,
) -> tuple[array.array[int], tuple[Any, ...], array.array[int], array.array[int]]:
    """The fds of a batch, its objects by index (so sockets are used without a dup), and zeroed
    errno and option columns."""
    targets = _materialize(targets)
    fds = collect_fds(targets)
    n = len(fds)
    objects = targets if isinstance(targets, tuple) else (None,) * n
    return fds, objects, array.array("i", bytes(4 * n)), array.array("B", bytes(n))


def uring_status() -> tuple[int, str]:
    """(0, how) where bulk apply can use io_uring here, else (errno, why not)."""
    return errno.ENOSYS, "the pure-Python twin makes one system call per option"


def worker_count() -> int:
    """Bulk worker threads alive now: the twin has none."""
    return 0


def apply_many(
    targets: Any, policy: KeepAlive, threads: int, backend: str
) -> tuple[array.array[int], array.array[int], array.array[int], int]:
    """Apply a policy to every target: (fds, errnos, options, failed_count).

    ``threads`` and ``backend`` are accepted and ignored: the GIL would serialise the calls anyway.
    """
    spec = require_policy(policy)._spec
    fds, objects, errnos, options = _prepare(targets)
    failed = 0
    for i in range(len(fds)):
        err, option = _apply_fd(fds[i], objects[i], spec)
        if err:
            errnos[i] = err
            options[i] = option
            failed += 1
    return fds, errnos, options, failed


def read_many(
    targets: Any, threads: int
) -> tuple[
    array.array[int],
    array.array[int],
    array.array[int],
    array.array[int],
    array.array[int],
    array.array[int],
    array.array[int],
    array.array[int],
    int,
]:
    """Read every target: (fds, errnos, options, enabled, idle, interval, count, user_timeout_ms, failed)."""
    fds, objects, errnos, options = _prepare(targets)
    n = len(fds)
    enabled = array.array("b", bytes(n))
    columns = [array.array("i", bytes(4 * n)) for _ in range(4)]
    failed = 0
    for i in range(n):
        err, option, values = _read_fd(fds[i], objects[i])
        errnos[i] = err
        options[i] = option
        enabled[i] = values[0]
        for k in range(4):
            columns[k][i] = values[k + 1]
        failed += err != 0
    return (fds, errnos, options, enabled, columns[0], columns[1], columns[2], columns[3], failed)


def _is_buffer(obj: Any) -> bool:
    try:
        memoryview(obj).release()
    except TypeError:
        return False
    return True
