"""The pure-Python twin of the compiled core: the same functions over the stdlib socket module.

Used on PyPy and other non-CPython implementations, and where ``KA_NO_EXTENSIONS`` is set.
Every function returns what ``_ka_c`` returns for the same input, including which option failed.
The ``threads`` argument is accepted and ignored: the GIL would serialise the calls anyway.
"""

from __future__ import annotations

import array
import errno
import socket
from collections.abc import Iterable
from typing import Any

from ._borrow import borrowed_call
from ._options import (
    HERE,
    IPPROTO_TCP,
    PLATFORM,
    PLATFORM_CODES,
    SIO_KEEPALIVE_VALS,
    SOCKET_NUMBERS,
    WSAEINVAL,
    WSAENOPROTOOPT,
    Option,
    OSCalls,
    user_timeout_value,
)
from ._options import LIMITS as _LIMITS
from .errors import buffer_error, option_error, target_error, targets_error
from .policy import KeepAlive, require_policy
from .protocol import UNREAD, AppliedColumns, ReadColumns, Spec
from .results import KeepAliveSettings, settings_of
from .targets import Target, Targets

IMPLEMENTATION = "python"
PLATFORM_CODE = PLATFORM_CODES[PLATFORM]
LIMITS = tuple(_LIMITS)
HAVE = tuple(
    SOCKET_NUMBERS[o] is not None for o in (Option.IDLE, Option.INTERVAL, Option.COUNT, Option.USER_TIMEOUT)
)

# The compiled core's backend="auto" threshold (sockets per call), mirrored; the twin never uses io_uring.
URING_AUTO_MIN = 64

_FD_TYPECODE = "q" if PLATFORM == "windows" else "i"
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_MISSING_ON_WINDOWS = (WSAENOPROTOOPT, WSAEINVAL)
_WINDOWS = PLATFORM == "windows"
_BAD_FD = getattr(errno, "WSAENOTSOCK", 10038) if _WINDOWS else errno.EBADF
_BUFFER_FORMATS = {"i", "l", "q", "n", "I", "L", "Q", "N"}


def _is_c_int(fd: int) -> bool:
    return _WINDOWS or _INT_MIN <= fd <= _INT_MAX


def _fileno(target: Any, where: str) -> int:
    if isinstance(target, bool):
        raise target_error(where, target, "bool")
    if isinstance(target, int):
        if not -(2**63) <= target < 2**63:
            raise target_error(where, target, "range")
        if not _is_c_int(target):
            raise target_error(where, int(target), "c-int")
        return int(target)
    try:
        method = getattr(target, "fileno", None)
    except Exception as exc:
        raise target_error(where, target, "lookup", exc) from exc
    if method is None:
        raise target_error(where, target, "no-fileno")
    if not callable(method):
        raise target_error(where, target, "not-callable", method)
    try:
        value = method()
    except Exception as exc:
        raise target_error(where, target, "call", exc) from exc
    if isinstance(value, bool) or not isinstance(value, int):
        raise target_error(where, target, "returned-type", value)
    if not -(2**63) <= value < 2**63:
        raise target_error(where, target, "returned-range", value)
    if not _is_c_int(value):
        raise target_error(where, target, "returned-c-int", int(value))
    return int(value)


def fileno_of(target: Target) -> int:
    """The descriptor number ka would use for ``target``."""
    return _fileno(target, "target")


def _errno_of(exc: OSError, calls: OSCalls = HERE) -> int:
    """The error the C shim reports for the same failure: on Windows the Winsock code
    (``exc.winerror``; CPython maps ``exc.errno`` through winerror_to_errno), else ``errno``."""
    winerror = getattr(exc, "winerror", None)
    if calls.windows and winerror:
        return int(winerror)
    return exc.errno if exc.errno is not None else errno.EINVAL


def _enoprotoopt(calls: OSCalls) -> int:
    return WSAENOPROTOOPT if calls.windows else errno.ENOPROTOOPT


def _apply_sock(sock: Any, spec: Spec, calls: OSCalls = HERE) -> tuple[int, int]:
    """(errno, option) of the first failing call, or (0, 0); the calls of _ka_posix.h /
    _ka_windows.h's ka_apply_one, in the same order."""
    enable, idle, interval, count, user_timeout_ms = spec
    try:
        sock.setsockopt(calls.sol_socket, calls.so_keepalive, 1 if enable else 0)
    except OSError as exc:
        return _errno_of(exc, calls), Option.KEEPALIVE
    if enable:
        use_ioctl = False
        for option, value in ((Option.IDLE, idle), (Option.INTERVAL, interval)):
            if value < 0 or use_ioctl:
                continue
            number = calls.numbers[option]
            if number is None:
                return _enoprotoopt(calls), option
            try:
                sock.setsockopt(IPPROTO_TCP, number, value)
            except OSError as exc:
                err = _errno_of(exc, calls)
                if not (calls.windows and err in _MISSING_ON_WINDOWS):
                    return err, option
                use_ioctl = True  # Windows before 10 1709: SIO_KEEPALIVE_VALS sets both
        if use_ioctl:
            option = Option.IDLE if idle >= 0 else Option.INTERVAL
            if idle < 0:  # the idle the ioctl would overwrite cannot be read back: refuse
                return WSAENOPROTOOPT, option
            try:
                sock.ioctl(SIO_KEEPALIVE_VALS, (1, idle * 1000, interval * 1000 if interval >= 0 else 1000))
            except OSError as exc:
                return _errno_of(exc, calls), option
        if count >= 0:
            number = calls.numbers[Option.COUNT]
            if number is None:
                return _enoprotoopt(calls), Option.COUNT
            try:
                sock.setsockopt(IPPROTO_TCP, number, count)
            except OSError as exc:
                return _errno_of(exc, calls), Option.COUNT
    if user_timeout_ms >= 0:
        number = calls.numbers[Option.USER_TIMEOUT]
        if number is None:
            return _enoprotoopt(calls), Option.USER_TIMEOUT
        try:
            sock.setsockopt(IPPROTO_TCP, number, user_timeout_value(user_timeout_ms, calls))
        except OSError as exc:
            err = _errno_of(exc, calls)
            if not (calls.user_timeout_fallback is not None and err in _MISSING_ON_WINDOWS):
                return err, Option.USER_TIMEOUT
            try:  # TCP_MAXRT: whole seconds, rounded up
                sock.setsockopt(IPPROTO_TCP, calls.user_timeout_fallback, -(-user_timeout_ms // 1000))
            except OSError as exc2:
                return _errno_of(exc2, calls), Option.USER_TIMEOUT
    return 0, 0


def _apply_fd(fd: int, target: Any, spec: Spec) -> tuple[int, int]:
    """(errno, option) for one target; SO_KEEPALIVE is always the first call, so a descriptor
    that is no socket (or not open) fails on it."""
    if isinstance(target, socket.socket) and target.fileno() == fd:
        return _apply_sock(target, spec)
    if fd < 0:  # what the kernel answers for a negative descriptor
        return _BAD_FD, Option.KEEPALIVE
    try:
        return borrowed_call(fd, lambda sock: _apply_sock(sock, spec))
    except OSError as exc:  # not a socket, or not open: the first call would have failed so
        return _errno_of(exc), Option.KEEPALIVE


def apply(target: Target, policy: KeepAlive) -> None:
    """Apply ``policy`` to one socket: a ``socket.socket``, an int fd, or anything with ``fileno()``.

    Raises ``OSError`` (the errno's own subclass) with ``errno``, ``fd`` and ``option`` (a
    ``ka.Option``) when a call fails; the options before it stay applied (order: SO_KEEPALIVE,
    idle, interval, count, user timeout), so a socket whose later option failed has keepalive on
    with the values set so far and the OS's for the rest.

    For fresh sockets. On macOS and the BSDs a connection that received nothing for interval x
    count seconds is dropped ``idle`` seconds after a policy lands on it (the idle restarts the
    kernel's timer, not its receive clock): give existing connections ``ka.retrofit``.
    """
    spec = require_policy(policy).spec
    fd = _fileno(target, "target")
    err, option = _apply_fd(fd, target, spec)
    if err:
        raise option_error(err, fd, option, "setting")


def _read_knob(sock: Any, number: int, calls: OSCalls) -> int:
    """One IPPROTO_TCP value; -1 where this Windows build lacks the option, or where NetBSD
    refuses to read it back. Raises OSError."""
    try:
        return int(sock.getsockopt(IPPROTO_TCP, number))
    except OSError as exc:
        err = _errno_of(exc, calls)
        if (calls.windows and err in _MISSING_ON_WINDOWS) or (
            calls.knob_reads_refused and err == errno.ENOPROTOOPT
        ):
            return -1
        raise


def _read_sock(sock: Any, calls: OSCalls = HERE) -> tuple[int, int, Spec]:
    values = [-1, -1, -1, -1, -1]
    option = Option.KEEPALIVE
    try:
        values[0] = 1 if sock.getsockopt(calls.sol_socket, calls.so_keepalive) else 0
        for k, option in enumerate((Option.IDLE, Option.INTERVAL, Option.COUNT), start=1):
            number = calls.numbers[option]
            if number is not None:
                values[k] = _read_knob(sock, number, calls)
        option = Option.USER_TIMEOUT
        number = calls.numbers[Option.USER_TIMEOUT]
        if number is not None:
            value = _read_knob(sock, number, calls)
            unit = calls.user_timeout_unit_ms
            if value == -1 and calls.user_timeout_fallback is not None:
                value, unit = _read_knob(sock, calls.user_timeout_fallback, calls), 1000
                value = value * unit if 0 <= value <= 2147483647 // unit else -1
            elif 0 < value <= 2147483647 // unit:
                value *= unit
            values[4] = value
    except OSError as exc:
        return _errno_of(exc, calls), option, Spec(*values)
    return 0, 0, Spec(*values)


def _read_fd(fd: int, target: Any) -> tuple[int, int, Spec]:
    if isinstance(target, socket.socket) and target.fileno() == fd:
        return _read_sock(target)
    if fd < 0:
        return _BAD_FD, Option.KEEPALIVE, UNREAD
    try:
        return borrowed_call(fd, _read_sock)
    except OSError as exc:  # not a socket, or not open: the first call would have failed so
        return _errno_of(exc), Option.KEEPALIVE, UNREAD


def read(target: Target) -> KeepAliveSettings:
    """One socket's keepalive values as the kernel reports them (on Linux, the sysctl defaults
    for any value never set). A value the OS cannot report is None, never a default presented
    as the socket's: on Windows before 10 1709, idle and interval set through SIO_KEEPALIVE_VALS
    cannot be read back.

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
            raise buffer_error(fmt, view.itemsize, view.ndim)
        # tobytes copies any stride; memoryview.tolist() refuses "=i" (numpy structured fields)
        signed = fmt not in ("I", "L", "Q", "N")
        code = ("i" if signed else "I") if view.itemsize == 4 else ("q" if signed else "Q")
        values = array.array(code, view.tobytes())
    for i, value in enumerate(values):
        if value >= 2**63:
            raise target_error(f"targets[{i}]", value, "range")
        if not _is_c_int(value):
            raise target_error(f"targets[{i}]", value, "c-int")
    return array.array(_FD_TYPECODE, values)


def _materialize(targets: Any) -> Any:
    """A buffer as it is; a tuple as it is; any other iterable as a tuple (a snapshot the caller
    cannot change during the call, as the compiled core takes); anything else an error."""
    text = isinstance(targets, (str, bytes, bytearray))
    if text or not (isinstance(targets, Iterable) or _is_buffer(targets)):
        raise targets_error(targets)
    if type(targets) is tuple or _is_buffer(targets):
        return targets
    return tuple(targets)


def collect_fds(targets: Targets) -> array.array[int]:
    """Every target as a descriptor number, in an owned array ('i', or 'q' on Windows)."""
    items = _materialize(targets)
    fds = _buffer_fds(items)
    if fds is not None:
        return fds
    return array.array(_FD_TYPECODE, [_fileno(t, f"targets[{i}]") for i, t in enumerate(items)])


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


def release_workers() -> int:
    """End the idle bulk workers now: the twin has none, so none are left (0)."""
    return 0


def apply_many(targets: Targets, policy: KeepAlive, threads: int, backend: str) -> AppliedColumns:
    """Apply a policy to every target.

    ``threads`` and ``backend`` are accepted and ignored: the GIL would serialise the calls anyway.
    """
    spec = require_policy(policy).spec
    fds, objects, errnos, options = _prepare(targets)
    failed = 0
    for i in range(len(fds)):
        err, option = _apply_fd(fds[i], objects[i], spec)
        if err:
            errnos[i] = err
            options[i] = option
            failed += 1
    return AppliedColumns(fds, errnos, options, failed)


def read_many(targets: Targets, threads: int) -> ReadColumns:
    """Read every target, one column per value."""
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
    return ReadColumns(fds, errnos, options, enabled, columns[0], columns[1], columns[2], columns[3], failed)


def _is_buffer(obj: Any) -> bool:
    try:
        memoryview(obj).release()
    except TypeError:
        return False
    return True
