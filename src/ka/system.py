"""The system's own keepalive defaults: what an untouched socket gets.

Linux: ``/proc/sys/net/ipv4/tcp_keepalive_{time,intvl,probes}`` of the caller's network namespace.
macOS and FreeBSD: the ``net.inet.tcp.keepidle`` / ``keepintvl`` (milliseconds) and ``keepcnt``
sysctls. NetBSD: the same names in slow-timer ticks (``net.inet.tcp.slowhz`` a second, 2). OpenBSD
(no ``sysctlbyname``): ``net.inet.tcp.keepidle`` / ``keepintvl`` in seconds by MIB; its count is
fixed at 8.
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

from ._options import HERE, LIMITS, PLATFORM
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


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _sysctl_int(name: str) -> int | None:
    """An int sysctl by name (``sysctlbyname``: macOS, FreeBSD, NetBSD), None where unreadable."""
    value = ctypes.c_int(0)
    size = ctypes.c_size_t(ctypes.sizeof(value))
    rc = _libc().sysctlbyname(
        name.encode(), ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0)
    )
    return value.value if rc == 0 else None


def _sysctl_mib(mib: tuple[int, ...]) -> int | None:
    """An int sysctl by MIB (``sysctl(2)``: OpenBSD has no ``sysctlbyname``), None where unreadable."""
    name = (ctypes.c_int * len(mib))(*mib)
    value = ctypes.c_int(0)
    size = ctypes.c_size_t(ctypes.sizeof(value))
    rc = _libc().sysctl(
        name, ctypes.c_uint(len(mib)), ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0)
    )
    return value.value if rc == 0 else None


# OpenBSD sys/sysctl.h CTL_NET, PF_INET, IPPROTO_TCP, netinet/tcp_var.h TCPCTL_KEEPIDLE/KEEPINTVL
# (tools/sysctl_constants.c checks them against the SDK): seconds (tcp_usrreq.c tcpctl_vars,
# tcp_keepidle_sec); the count is TCPTV_KEEPCNT (tcp_timer.h), no sysctl.
OPENBSD_KEEPIDLE = (4, 2, 6, 3)
OPENBSD_KEEPINTVL = (4, 2, 6, 4)
OPENBSD_KEEPCNT = 8
NETBSD_SLOWHZ = 2  # PR_SLOWHZ (sys/protosw.h), where net.inet.tcp.slowhz cannot be read


def _seconds(value: int | None, per_second: int, default: int) -> int:
    return default if value is None else max(1, value // per_second)


def _bsd(system: str) -> SystemDefaults:
    """macOS and the BSDs; ``system``: ``darwin``, ``freebsd``, ``netbsd``, ``openbsd``."""
    if system == "openbsd":
        return SystemDefaults(
            _seconds(_sysctl_mib(OPENBSD_KEEPIDLE), 1, 7200),
            _seconds(_sysctl_mib(OPENBSD_KEEPINTVL), 1, 75),
            OPENBSD_KEEPCNT,
            "sysctl net.inet.tcp.keepidle/keepintvl (s); count fixed at 8 (TCPTV_KEEPCNT)",
        )
    count = _sysctl_int("net.inet.tcp.keepcnt")
    if system == "netbsd":  # tcp_timer.h: the timers count PR_SLOWHZ ticks a second
        hz = _sysctl_int("net.inet.tcp.slowhz") or NETBSD_SLOWHZ
        return SystemDefaults(
            _seconds(_sysctl_int("net.inet.tcp.keepidle"), hz, 7200),
            _seconds(_sysctl_int("net.inet.tcp.keepintvl"), hz, 75),
            count if count is not None else 8,
            f"sysctl net.inet.tcp.keepidle/keepintvl ({hz} ticks a second)/keepcnt",
        )
    return SystemDefaults(
        _seconds(_sysctl_int("net.inet.tcp.keepidle"), 1000, 7200),
        _seconds(_sysctl_int("net.inet.tcp.keepintvl"), 1000, 75),
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
        return _bsd(HERE.name)
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
