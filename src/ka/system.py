"""The system's own keepalive defaults: what an untouched socket gets.

Linux: ``/proc/sys/net/ipv4/tcp_keepalive_{time,intvl,probes}`` of the caller's network namespace.
macOS and BSD: the ``net.inet.tcp.keepidle`` / ``keepintvl`` (milliseconds) and ``keepcnt`` sysctls.
Windows: the ``KeepAliveTime`` / ``KeepAliveInterval`` registry values (milliseconds) under
``HKLM\\SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters``, else the documented 2 h and 1 s;
the probe count is fixed at 10 on Vista and later.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import sys
from pathlib import Path
from typing import NamedTuple

from ._options import LIMITS, PLATFORM
from ._signals import signals_deferred
from .units import detection_time, probe_count, whole_seconds

PROC_DIR = Path("/proc/sys/net/ipv4")
LINUX_FILES = {
    "idle": "tcp_keepalive_time",
    "interval": "tcp_keepalive_intvl",
    "count": "tcp_keepalive_probes",
}


class SystemDefaults(NamedTuple):
    """Keepalive values a socket gets when nothing sets them: seconds, seconds, probes."""

    idle: int
    interval: int
    count: int  # type: ignore[assignment]  # the field shadows tuple.count, on purpose
    source: str

    @property
    def detection_time(self) -> int:
        """idle + interval * count: seconds to find a dead peer with these values."""
        return int(detection_time(self.idle, self.interval, self.count))


def _linux(proc_dir: Path) -> SystemDefaults:
    values = {field: int((proc_dir / name).read_text().strip()) for field, name in LINUX_FILES.items()}
    return SystemDefaults(values["idle"], values["interval"], values["count"], str(proc_dir))


def _sysctl_int(name: str) -> int | None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    value = ctypes.c_int(0)
    size = ctypes.c_size_t(ctypes.sizeof(value))
    rc = libc.sysctlbyname(name.encode(), ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0))
    return value.value if rc == 0 else None


def _bsd() -> SystemDefaults:
    idle_ms = _sysctl_int("net.inet.tcp.keepidle")
    interval_ms = _sysctl_int("net.inet.tcp.keepintvl")
    count = _sysctl_int("net.inet.tcp.keepcnt")
    return SystemDefaults(
        max(1, (idle_ms if idle_ms is not None else 7_200_000) // 1000),
        max(1, (interval_ms if interval_ms is not None else 75_000) // 1000),
        count if count is not None else 8,
        "sysctl net.inet.tcp.keepidle/keepintvl/keepcnt",
    )


def _windows() -> SystemDefaults:
    idle_ms, interval_ms = 7_200_000, 1000
    source = "documented defaults"
    try:
        import winreg

        key = winreg.OpenKey(  # type: ignore[attr-defined,unused-ignore]
            winreg.HKEY_LOCAL_MACHINE,  # type: ignore[attr-defined,unused-ignore]
            r"SYSTEM\CurrentControlSet\Services\Tcpip\Parameters",
        )
        with key:
            for name in ("KeepAliveTime", "KeepAliveInterval"):
                try:
                    value, _ = winreg.QueryValueEx(key, name)  # type: ignore[attr-defined,unused-ignore]
                except OSError:
                    continue
                source = "registry Tcpip\\Parameters"
                if name == "KeepAliveTime":
                    idle_ms = int(value)
                else:
                    interval_ms = int(value)
    except (ImportError, OSError):
        pass
    return SystemDefaults(max(1, idle_ms // 1000), max(1, interval_ms // 1000), 10, source)


def system_defaults() -> SystemDefaults:
    """The keepalive values an untouched socket gets on this system, read now."""
    if PLATFORM == "linux":
        return _linux(PROC_DIR)
    if PLATFORM in ("darwin", "freebsd"):
        return _bsd()
    if PLATFORM == "windows":
        return _windows()
    return SystemDefaults(7200, 75, 9, "RFC 1122 defaults (unknown platform)")


def set_system_defaults(
    idle: int | None = None, interval: int | None = None, count: int | None = None
) -> SystemDefaults:
    """Write the Linux sysctls for the caller's network namespace (root only); returns the new values.

    Values are validated and rounded as ``KeepAlive`` does (seconds rounded up) before anything
    is written; ``None`` leaves a sysctl as it is. Every file is opened before any is written,
    and a failed write restores the values already written, so the three change together or not
    at all. SIGINT and SIGTERM that arrive during the writes are delivered after them (when
    called from the main thread); any other exception raised during the writes, KeyboardInterrupt
    included, restores the values already written before it propagates. Raises PermissionError
    naming the file when the caller may not write it (root or CAP_NET_ADMIN over the namespace
    is needed), and NotImplementedError on other platforms.
    """
    if PLATFORM != "linux":
        raise NotImplementedError(
            f"setting the system keepalive defaults is supported on Linux only, not {sys.platform}"
        )
    # KeepAlive's validation and rounding: raises before any write
    wanted: dict[str, int] = {}
    if idle is not None:
        wanted["idle"] = whole_seconds("idle", idle, LIMITS.max_idle)
    if interval is not None:
        wanted["interval"] = whole_seconds("interval", interval, LIMITS.max_interval)
    if count is not None:
        wanted["count"] = probe_count(count)
    if not wanted:
        return system_defaults()
    previous = system_defaults()
    opened: dict[str, int] = {}
    try:
        for field in wanted:
            path = PROC_DIR / LINUX_FILES[field]
            try:
                opened[field] = os.open(path, os.O_WRONLY)
            except OSError as exc:
                raise _write_error(exc, path) from None
        written: list[str] = []
        with signals_deferred():
            try:
                for field, value in wanted.items():
                    path = PROC_DIR / LINUX_FILES[field]
                    written.append(field)  # before the write: an interrupt may land right after it
                    try:
                        os.write(opened[field], f"{int(value)}\n".encode())
                    except OSError as exc:
                        raise _write_error(exc, path) from None
            except BaseException:
                _restore(previous, written)
                raise
    finally:
        for fd in opened.values():
            os.close(fd)
    return system_defaults()


def _write_error(exc: OSError, path: Path) -> OSError:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionError(
            exc.errno,
            f"{exc.strerror}: writing {path} needs root or CAP_NET_ADMIN over this network namespace",
            str(path),
        )
    if exc.errno == errno.EROFS:
        return OSError(exc.errno, f"{exc.strerror}: {path} is read-only here (a container?)", str(path))
    return OSError(exc.errno, f"{exc.strerror}: writing {path}", str(path))


def _restore(previous: SystemDefaults, fields: list[str]) -> None:
    for field in fields:
        with contextlib.suppress(OSError):  # best effort: the caller sees the original error
            (PROC_DIR / LINUX_FILES[field]).write_text(f"{getattr(previous, field)}\n")
