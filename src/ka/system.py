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
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, TypeVar

from ._options import HERE, LIMITS, PLATFORM
from ._signals import signals_deferred
from .units import detection_time, probe_count, whole_seconds

PROC_DIR = Path("/proc/sys/net/ipv4")
LINUX_FILES = {
    "idle": "tcp_keepalive_time",
    "interval": "tcp_keepalive_intvl",
    "count": "tcp_keepalive_probes",
}
SYSCTL_D = Path("/etc/sysctl.d")  # read by systemd-sysctl (and procps' sysctl --system) at boot
PERSIST_FILE = SYSCTL_D / "90-ka-keepalive.conf"
CLONE_NEWNET = 0x40000000  # <linux/sched.h>
_TCP_RTO_MIN = 0.2  # seconds, include/net/tcp.h TCP_RTO_MIN (HZ / 5)
_TCP_RTO_MAX = 120.0  # seconds, TCP_RTO_MAX (120 * HZ)

T = TypeVar("T")


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
    idle: int | None = None,
    interval: int | None = None,
    count: int | None = None,
    *,
    persist: str | os.PathLike[str] | None = None,
) -> SystemDefaults:
    """Write the Linux sysctls for the caller's network namespace (root only); returns the new values.

    Values are validated and rounded as ``KeepAlive`` does (seconds rounded up) before anything
    is written; ``None`` leaves a sysctl as it is. Every file is opened before any is written,
    and a failed write restores the values already written, so the three change together or not
    at all. SIGINT and SIGTERM that arrive during the writes are delivered after them (when
    called from the main thread); any other exception raised during the writes, KeyboardInterrupt
    included, restores the values already written before it propagates. Raises PermissionError
    naming the file when the caller may not write it (root or CAP_NET_ADMIN over the namespace
    is needed), an OSError with ``errno.EROFS`` when ``/proc/sys`` is mounted read-only (as in
    most containers), and NotImplementedError on other platforms.

    ``persist``: a file (``PERSIST_FILE``, under ``/etc/sysctl.d``) that makes the values last
    across reboots: written with all three values as they are after the change, in the same all
    or nothing: it is created (as a temporary file beside it) before any sysctl is written, and
    if it cannot be completed the sysctls are put back. A change without it lasts until reboot.
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
    if not wanted and persist is None:
        return system_defaults()
    previous = system_defaults()
    target = None if persist is None else Path(persist)
    opened: dict[str, int] = {}
    temporary: Path | None = None
    try:
        for field in wanted:
            path = PROC_DIR / LINUX_FILES[field]
            try:
                opened[field] = os.open(path, os.O_WRONLY)
            except OSError as exc:
                raise _write_error(exc, path) from None
        if target is not None:
            temporary = _create_beside(target)
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
                if target is not None and temporary is not None:
                    now = system_defaults()
                    _complete(temporary, target, sysctl_conf(now))
                    temporary = None
            except BaseException:
                _restore(previous, written)
                raise
    finally:
        for fd in opened.values():
            os.close(fd)
        if temporary is not None:
            with contextlib.suppress(OSError):
                temporary.unlink()
    return system_defaults()


def sysctl_conf(defaults: SystemDefaults) -> str:
    """The text of a ``sysctl.d`` file that sets these three values at boot."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    lines = [f"# TCP keepalive defaults, written by ka defaults --set --persist on {stamp}."]
    lines += [f"net.ipv4.{LINUX_FILES[field]} = {getattr(defaults, field)}" for field in LINUX_FILES]
    return "\n".join(lines) + "\n"


def _create_beside(target: Path) -> Path:
    """An empty temporary file in ``target``'s directory (so a rename replaces ``target`` in one step)."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise _write_error(exc, target, persist=True) from None
    os.close(fd)
    return temporary


def _complete(temporary: Path, target: Path, text: str) -> None:
    try:
        with open(temporary, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        raise _write_error(exc, target, persist=True) from None


def descriptor_use() -> tuple[int, int] | None:
    """This process's soft limit on open descriptors (RLIMIT_NOFILE) and how many it has open
    (/proc/self/fd); None without a limit or where either cannot be read (not Linux)."""
    try:
        import resource  # POSIX only

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        in_use = len(os.listdir("/proc/self/fd")) - 1  # less the one listdir itself opened
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else (int(soft), in_use)


def tcp_retries2() -> int | None:
    """``net.ipv4.tcp_retries2`` of the caller's network namespace (Linux; None elsewhere or if
    unreadable): how many times unacknowledged data is retransmitted before the connection is
    dropped, when no ``TCP_USER_TIMEOUT`` is set. Keepalive does not cover that case: probes are
    sent only while nothing is in flight."""
    if PLATFORM != "linux":
        return None
    try:
        return int((PROC_DIR / "tcp_retries2").read_text().strip())
    except (OSError, ValueError):
        return None


def retransmission_timeout(retries: int) -> float:
    """Seconds until a connection with unacknowledged data is dropped after ``retries``
    retransmissions (``tcp_retries2``), with the minimum RTO of 200 ms doubling up to 120 s: the
    kernel's ``tcp_model_timeout``. The default 15 gives 924.6 s (Documentation/networking/
    ip-sysctl.rst); a longer round-trip time makes it longer."""
    if retries <= 0:
        return 0.0
    doublings = 0
    while _TCP_RTO_MIN * (2 << doublings) <= _TCP_RTO_MAX:  # ilog2(TCP_RTO_MAX / TCP_RTO_MIN)
        doublings += 1
    if retries <= doublings:
        return round(((2 << retries) - 1) * _TCP_RTO_MIN, 3)
    return round(((2 << doublings) - 1) * _TCP_RTO_MIN + (retries - doublings) * _TCP_RTO_MAX, 3)


def in_network_namespace(path: str | os.PathLike[str], call: Callable[[], T]) -> T:
    """``call()`` run in the network namespace at ``path`` (``/proc/PID/ns/net``,
    ``/run/netns/NAME``) and its result; its exceptions propagate.

    A short-lived thread joins the namespace with ``setns(CLONE_NEWNET)`` (only that thread
    moves; it ends after the call), so ``/proc/sys/net`` there shows that namespace's sysctls.
    Needs CAP_SYS_ADMIN over the namespace's owner (PermissionError otherwise); a path that is
    not a network namespace is a ValueError. Linux only.
    """
    if PLATFORM != "linux":
        raise NotImplementedError(f"network namespaces are a Linux feature, not {sys.platform}'s")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"there is no network namespace at {path}", str(path)) from None
    except PermissionError as exc:
        raise PermissionError(
            exc.errno, f"opening {path} needs ptrace permission over its process (or root)", str(path)
        ) from None
    outcome: dict[str, object] = {}

    def joined() -> None:
        try:
            _setns(fd, path)
            outcome["result"] = call()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    try:
        worker = threading.Thread(target=joined, name="ka-netns")
        worker.start()
        worker.join()
    finally:
        os.close(fd)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]  # type: ignore[return-value]


def _setns(fd: int, path: str | os.PathLike[str]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(ctypes.c_int(fd), ctypes.c_int(CLONE_NEWNET)) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.EINVAL:
        raise ValueError(f"{path} is not a network namespace")
    if err == errno.EPERM:
        raise PermissionError(
            err, f"joining the network namespace at {path} needs CAP_SYS_ADMIN over it (root)", str(path)
        )
    raise OSError(err, f"{os.strerror(err)}: joining the network namespace at {path}", str(path))


def _write_error(exc: OSError, path: Path, *, persist: bool = False) -> OSError:
    if exc.errno in (errno.EACCES, errno.EPERM):
        need = "root" if persist else "root or CAP_NET_ADMIN over this network namespace"
        return PermissionError(exc.errno, f"{exc.strerror}: writing {path} needs {need}", str(path))
    if exc.errno == errno.EROFS:
        where = (
            f"{path.parent} is on a read-only file system"
            if persist
            else f"{path} is read-only here: /proc/sys is mounted read-only (as in most containers); "
            "set the values where the namespace is made (a pod's securityContext.sysctls, docker run "
            "--sysctl) or from the host (ka defaults --pid PID)"
        )
        return OSError(exc.errno, where, str(path))
    return OSError(exc.errno, f"{exc.strerror}: writing {path}", str(path))


def _restore(previous: SystemDefaults, fields: list[str]) -> None:
    for field in fields:
        with contextlib.suppress(OSError):  # best effort: the caller sees the original error
            (PROC_DIR / LINUX_FILES[field]).write_text(f"{getattr(previous, field)}\n")
