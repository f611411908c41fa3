"""Linux: the keepalive state of a running process's TCP connections, and changing it in place.

How it works: ``/proc/PID/fd`` names each socket descriptor (``socket:[inode]``);
``/proc/PID/net/tcp`` and ``tcp6`` (the process's own network namespace) give each socket inode
its addresses, state and running timer. ``pidfd_open`` + ``pidfd_getfd`` (kernel 5.6+) duplicate
the process's descriptors into this one; a duplicate shares the socket, so ``ka.read_many`` reads
the target's values and ``ka.apply_many`` changes them, with no help from the target.

Permission: listing ``/proc/PID/fd`` and ``pidfd_getfd`` both need ptrace permission over the
process (same user and, where Yama is on, ``kernel.yama.ptrace_scope`` <= 1; or CAP_SYS_PTRACE).
A process whose permitted capabilities exceed the caller's needs CAP_SYS_PTRACE too.

The timer reported is the kernel's, from ``/proc/PID/net/tcp`` (the ``tr``, ``tm->when`` and
``timeout`` fields, which ``ss -tno`` shows as ``timer:(keepalive,59sec,0)``): ``keepalive`` with
the seconds until it fires and the probes sent so far, ``on`` (retransmission), ``persist``
(zero-window probe), ``timewait``, or ``none``.

Sockets of other network namespaces passed to the process (SCM_RIGHTS) are not in its tables and
are not listed. Duplicates are made and closed in chunks, so a process holding more connections
than this process may open descriptors is handled.
"""

from __future__ import annotations

import array
import ctypes
import dataclasses
import errno
import os
import platform
import select as _select
import socket
import struct
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, final

from . import apply_many, read_many
from ._options import PLATFORM, Option
from ._signals import signals_deferred
from .policy import KeepAlive, require_policy
from .results import KeepAliveSettings, settings_of

PROC = Path("/proc")

# /proc/net/tcp "st" field (include/net/tcp_states.h), named as ss names them.
TCP_STATES = {
    0x01: "established",
    0x02: "syn-sent",
    0x03: "syn-recv",
    0x04: "fin-wait-1",
    0x05: "fin-wait-2",
    0x06: "time-wait",
    0x07: "close",
    0x08: "close-wait",
    0x09: "last-ack",
    0x0A: "listen",
    0x0B: "closing",
    0x0C: "new-syn-recv",
}
# Groups accepted wherever a state is: every state but listen, and every state.
STATE_GROUPS = {
    "connected": frozenset(s for s in TCP_STATES.values() if s != "listen"),
    "all": frozenset(TCP_STATES.values()),
}

# /proc/net/tcp "tr" field (net/ipv4/tcp_ipv4.c, get_tcp4_sock), named as ss names them.
TIMER_NAMES = {0: "none", 1: "on", 2: "keepalive", 3: "timewait", 4: "persist"}

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# pidfd_getfd is 438 in the generic syscall table every architecture has used since 5.1, except
# alpha and MIPS (offset tables), which ka does not guess.
SYS_PIDFD_OPEN = 434
SYS_PIDFD_GETFD = 438
_ODD_SYSCALL_TABLES = ("alpha", "mips")

# Descriptors this process keeps free for everything else while holding duplicates.
_FD_HEADROOM = 64
MAX_CHUNK = 4096


class Endpoint(NamedTuple):
    """One end of a connection: address text (IPv4 or IPv6) and port."""

    address: str
    port: int

    def __str__(self) -> str:
        if ":" in self.address:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


class Timer(NamedTuple):
    """The timer the kernel runs on a socket now.

    ``name``: ``keepalive``, ``on`` (retransmission), ``persist``, ``timewait`` or ``none``;
    ``expires``: seconds until it fires (clock-tick precision, 0.0 for ``none``); ``probes``:
    keepalive or zero-window probes sent and unanswered so far; ``retransmits``: retransmissions.
    """

    name: str
    expires: float
    probes: int
    retransmits: int

    def __str__(self) -> str:
        if self.name == "none":
            return "none"
        return f"{self.name} {self.expires:.0f}s, {self.probes} probes"


class TcpEntry(NamedTuple):
    """One line of ``/proc/PID/net/tcp`` or ``tcp6``."""

    inode: int
    family: str
    local: Endpoint
    remote: Endpoint
    state: str
    timer: Timer
    uid: int


class Connection(NamedTuple):
    """A TCP socket a process holds: its descriptor number in that process and what /proc says."""

    pid: int
    fd: int
    inode: int
    family: str
    local: Endpoint
    remote: Endpoint
    state: str
    timer: Timer


class ConnectionState(NamedTuple):
    """A connection and its keepalive values as read through a duplicate.

    ``settings`` is None when the read failed or the socket was gone; ``error`` then says why.
    """

    connection: Connection
    settings: KeepAliveSettings | None
    error: str | None


class Change(NamedTuple):
    """What ``apply`` did to one connection.

    ``status``: ``applied``, ``failed``, ``gone`` (closed before ka reached it), or for a dry run
    ``would change`` / ``already set``. ``before``/``after``: values read before and after
    (``after`` is the policy's outcome for a dry run, None where unknown). ``timer``: the kernel's
    timer after the change (the one before for a dry run).
    """

    connection: Connection
    status: str
    before: KeepAliveSettings | None
    after: KeepAliveSettings | None
    error: str | None
    errno: int
    option: str | None
    timer: Timer


@dataclasses.dataclass(frozen=True)
class ApplyReport:
    """The outcome of ``apply``: one ``Change`` per matched connection, in listing order."""

    pid: int
    policy: KeepAlive
    dry_run: bool
    changes: list[Change]

    def count(self, status: str) -> int:
        """How many connections ended with this status."""
        return sum(1 for c in self.changes if c.status == status)

    @property
    def ok(self) -> bool:
        """True when no connection failed (gone ones closed on their own and do not count)."""
        return self.count("failed") == 0


class NotPermitted(PermissionError):
    """The caller lacks ptrace permission over the process; the message names what is missing."""


# -- /proc parsing -------------------------------------------------------------------------------


def _ipv4(hex_address: str) -> str:
    # The kernel prints the address as one native-endian 32-bit word.
    return socket.inet_ntop(socket.AF_INET, struct.pack("=I", int(hex_address, 16)))


def _ipv6(hex_address: str) -> str:
    words = [int(hex_address[i : i + 8], 16) for i in range(0, 32, 8)]
    return socket.inet_ntop(socket.AF_INET6, struct.pack("=4I", *words))


def _endpoint(text: str, family: str) -> Endpoint:
    address, _, port = text.partition(":")
    return Endpoint(_ipv4(address) if family == "ipv4" else _ipv6(address), int(port, 16))


def parse_tcp_line(line: str, family: str) -> TcpEntry:
    """One data line of ``/proc/net/tcp`` (family ``ipv4``) or ``tcp6`` (``ipv6``)."""
    f = line.split()
    timer_code, _, when = f[5].partition(":")
    code = int(timer_code, 16)
    timer = Timer(
        TIMER_NAMES.get(code, f"timer-{code}"),
        int(when, 16) / _CLOCK_TICKS if code else 0.0,
        int(f[8]),
        int(f[6], 16),
    )
    state = int(f[3], 16)
    return TcpEntry(
        inode=int(f[9]),
        family=family,
        local=_endpoint(f[1], family),
        remote=_endpoint(f[2], family),
        state=TCP_STATES.get(state, f"state-{state}"),
        timer=timer,
        uid=int(f[7]),
    )


def tcp_table(pid: int | None = None, inodes: set[int] | None = None) -> dict[int, TcpEntry]:
    """TCP sockets of a process's network namespace (``None``: this process's), by inode.

    ``inodes``: keep only these (parsing is skipped for the rest). TIME_WAIT entries (inode 0)
    are left out: no process holds them.
    """
    base = PROC / ("self" if pid is None else str(pid)) / "net"
    table: dict[int, TcpEntry] = {}
    for name, family in (("tcp", "ipv4"), ("tcp6", "ipv6")):
        try:
            with open(base / name) as f:
                next(f, None)  # header
                for line in f:
                    # Cheap pre-filter on the inode column before parsing the whole line.
                    fields = line.split(None, 10)
                    if len(fields) < 10:
                        continue
                    inode = int(fields[9])
                    if inode == 0 or (inodes is not None and inode not in inodes):
                        continue
                    table[inode] = parse_tcp_line(line, family)
        except FileNotFoundError:
            if name == "tcp6":
                continue  # IPv6 disabled in that namespace
            raise
    return table


def _ptrace_scope() -> int | None:
    try:
        return int((PROC / "sys/kernel/yama/ptrace_scope").read_text())
    except (OSError, ValueError):
        return None


# linux/capability.h, by bit number.
CAPABILITY_NAMES = (
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
)
CAP_SYS_PTRACE = 19


def _capabilities(pid: int | None, field: str) -> int | None:
    """A capability set from /proc/PID/status (``CapEff``, ``CapPrm``) as a bit mask."""
    try:
        for line in (PROC / ("self" if pid is None else str(pid)) / "status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cap_names(mask: int) -> str:
    names = [
        "cap_" + (CAPABILITY_NAMES[bit] if bit < len(CAPABILITY_NAMES) else str(bit))
        for bit in range(mask.bit_length())
        if mask >> bit & 1
    ]
    if len(names) > 4:
        return ", ".join(names[:4]) + f" and {len(names) - 4} more"
    return ", ".join(names)


def process_owner(pid: int) -> int | None:
    """The effective uid of a process, or None when it cannot be read."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[2])
    except (OSError, ValueError, IndexError):
        pass
    return None


def thread_group(pid: int) -> int | None:
    """The process (thread group) that thread ``pid`` belongs to; ``pid`` itself for a process,
    None when there is no such thread. /proc/TID exists for every thread, though unlisted."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("Tgid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def command_name(pid: int) -> str:
    """The process's command name (``/proc/PID/comm``), or ``?``."""
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"


def permission_message(pid: int) -> str:
    """A sentence saying what the caller lacks to reach ``pid``'s descriptors."""
    owner = process_owner(pid)
    me = os.geteuid()
    parts = [f"ka needs ptrace permission over process {pid} ({command_name(pid)})"]
    if owner is not None and owner != me:
        parts.append(f"it belongs to uid {owner} and ka runs as uid {me}")
    scope = _ptrace_scope()
    if scope is not None and scope > 1:
        parts.append(f"kernel.yama.ptrace_scope is {scope} (it must be 0 or 1 without CAP_SYS_PTRACE)")
    mine = _capabilities(None, "CapEff")
    if mine is not None and not mine >> CAP_SYS_PTRACE & 1:
        parts.append("ka has no CAP_SYS_PTRACE")
    theirs = _capabilities(pid, "CapPrm")
    if mine is not None and theirs is not None and theirs & ~mine:
        parts.append(f"the process holds capabilities ka lacks ({_cap_names(theirs & ~mine)})")
    return (
        "; ".join(parts)
        + ". Run it as the process's user (with kernel.yama.ptrace_scope <= 1), or as root with "
        "CAP_SYS_PTRACE (a process whose capabilities exceed the caller's needs it too)."
    )


def socket_fds(pid: int) -> dict[int, int]:
    """The socket descriptors of a process: {fd: socket inode}.

    Raises ``NotPermitted`` (a PermissionError) when the caller may not list them, and
    ``ProcessLookupError`` when there is no such process.
    """
    fd_dir = PROC / str(pid) / "fd"
    found: dict[int, int] = {}
    try:
        entries = os.listdir(fd_dir)
    except PermissionError:
        raise NotPermitted(errno.EPERM, permission_message(pid)) from None
    except FileNotFoundError:
        raise ProcessLookupError(errno.ESRCH, f"there is no process {pid}") from None
    for name in entries:
        try:
            target = os.readlink(fd_dir / name)
        except FileNotFoundError:
            continue  # closed while we looked
        except PermissionError:
            raise NotPermitted(errno.EPERM, permission_message(pid)) from None
        if target.startswith("socket:["):
            found[int(name)] = int(target[8:-1])
    return found


def connections(pid: int, tables: dict[int, dict[int, TcpEntry]] | None = None) -> list[Connection]:
    """The TCP connections (any state, listeners too) process ``pid`` holds, by descriptor number.

    ``tables``: a cache of ``tcp_table`` results keyed by network namespace inode, for callers
    looking at many processes.
    """
    fds = socket_fds(pid)
    if not fds:
        return []
    if tables is None:
        try:
            table = tcp_table(pid, set(fds.values()))
        except FileNotFoundError:
            if (PROC / str(pid)).exists():
                raise
            raise ProcessLookupError(errno.ESRCH, f"process {pid} has exited") from None
    else:
        try:
            netns = os.stat(PROC / str(pid) / "ns/net").st_ino
        except OSError:
            netns = -pid
        if netns not in tables:
            tables[netns] = tcp_table(pid)
        table = tables[netns]
    result = []
    for fd in sorted(fds):
        entry = table.get(fds[fd])
        if entry is None:
            continue  # a Unix or UDP socket, or TCP from another namespace
        result.append(
            Connection(
                pid, fd, entry.inode, entry.family, entry.local, entry.remote, entry.state, entry.timer
            )
        )
    return result


def process_ids() -> list[int]:
    """Every process id in /proc, ascending."""
    return sorted(int(name) for name in os.listdir(PROC) if name.isdigit())


def netns_name(pid: int | None = None) -> str:
    """The network namespace of a process (``None``: this one), e.g. ``net:[4026531840]``."""
    try:
        return os.readlink(PROC / ("self" if pid is None else str(pid)) / "ns/net")
    except OSError:
        return "?"


# -- filters -------------------------------------------------------------------------------------


def normalize_states(states: Iterable[str]) -> frozenset[str]:
    """State names (as ss names them, or ``connected``/``all``) as a set; ValueError if unknown."""
    result: set[str] = set()
    for raw in states:
        name = raw.strip().lower().replace("_", "-")
        if name in STATE_GROUPS:
            result |= STATE_GROUPS[name]
        elif name in TCP_STATES.values():
            result.add(name)
        else:
            known = ", ".join([*sorted(STATE_GROUPS), *TCP_STATES.values()])
            raise ValueError(f"unknown TCP state {raw!r}: expected one of {known}")
    return frozenset(result)


def _port(value: int | None, name: str) -> int | None:
    if value is not None and not 0 < value < 65536:
        raise ValueError(f"{name}={value!r} is not a TCP port: expected 1 to 65535")
    return value


def select(
    conns: Iterable[Connection],
    *,
    local_port: int | None = None,
    remote_port: int | None = None,
    states: frozenset[str] | None = None,
) -> list[Connection]:
    """The connections that pass every filter given (None: no filter)."""
    _port(local_port, "local_port")
    _port(remote_port, "remote_port")
    return [
        c
        for c in conns
        if (local_port is None or c.local.port == local_port)
        and (remote_port is None or c.remote.port == remote_port)
        and (states is None or c.state in states)
    ]


# -- pidfd ---------------------------------------------------------------------------------------


def _check_platform() -> None:
    if PLATFORM != "linux":
        raise NotImplementedError(
            "reaching another process's connections needs Linux (pidfd_getfd); this is "
            f"{platform.system() or 'an unknown system'}"
        )
    machine = platform.machine().lower()
    if machine.startswith(_ODD_SYSCALL_TABLES):
        raise NotImplementedError(f"pidfd_getfd's syscall number on {machine} is not known to ka")


_libc: Any = None


def _syscall() -> Any:
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        _libc = libc
    return _libc.syscall


def pidfd_open(pid: int) -> int:
    """A pidfd for ``pid`` (no permission needed). ProcessLookupError when it does not exist."""
    _check_platform()
    try:
        if hasattr(os, "pidfd_open"):
            return os.pidfd_open(pid)
        fd = int(_syscall()(ctypes.c_long(SYS_PIDFD_OPEN), ctypes.c_int(pid), ctypes.c_uint(0)))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return fd
    except ProcessLookupError:
        raise ProcessLookupError(errno.ESRCH, f"there is no process {pid}") from None
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            raise NotImplementedError("pidfd_open needs Linux 5.3 or later") from None
        raise


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    """Duplicate descriptor ``target_fd`` of the pidfd's process into this one (close-on-exec).

    Raises OSError: EPERM without ptrace permission, EBADF when the process has no such
    descriptor, ESRCH when it has exited; NotImplementedError before Linux 5.6.
    """
    fd = int(
        _syscall()(
            ctypes.c_long(SYS_PIDFD_GETFD), ctypes.c_int(pidfd), ctypes.c_int(target_fd), ctypes.c_uint(0)
        )
    )
    if fd >= 0:
        return fd
    err = ctypes.get_errno()
    if err == errno.ENOSYS:
        raise NotImplementedError("pidfd_getfd needs Linux 5.6 or later")
    raise OSError(err, f"{os.strerror(err)} (pidfd_getfd of descriptor {target_fd})")


def _has_exited(pidfd: int) -> bool:
    """True once the pidfd's process has exited (a pidfd polls readable then, zombie or reaped)."""
    poller = _select.poll()
    poller.register(pidfd, _select.POLLIN)
    return bool(poller.poll(0))


def _chunk_size() -> int:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        soft = 1024
    if soft == getattr(resource, "RLIM_INFINITY", -1):
        soft = 1 << 20
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = _FD_HEADROOM
    return max(1, min(MAX_CHUNK, soft - in_use - _FD_HEADROOM))


@final
class Duplicates:
    """This process's duplicates of some of another process's socket descriptors.

    ``fds[i]`` is the duplicate of ``conns[i]``, or -1 where the socket is gone (the descriptor
    was closed, or now names another socket); ``gone[i]`` then says why. Close with ``close()``
    or use as a context manager. SIGINT/SIGTERM are held while duplicates are made and closed
    (main thread), so an interrupt never leaks one.
    """

    def __init__(self, pidfd: int, pid: int, conns: Sequence[Connection]) -> None:
        self.pid = pid
        self.conns = list(conns)
        self.fds = array.array("i", [-1] * len(self.conns))
        self.gone: list[str | None] = [None] * len(self.conns)
        try:
            # A signal between a dup and its store would leak the dup: held until all are made.
            with signals_deferred():
                for i, conn in enumerate(self.conns):
                    self._dup(pidfd, i, conn)
        except BaseException:
            self.close()
            raise

    def _dup(self, pidfd: int, i: int, conn: Connection) -> None:
        try:
            fd = pidfd_getfd(pidfd, conn.fd)
        except OSError as exc:
            if exc.errno == errno.EBADF:
                if _has_exited(pidfd):  # a zombie has no descriptors left: every dup says EBADF
                    raise ProcessLookupError(errno.ESRCH, f"process {self.pid} has exited") from None
                self.gone[i] = f"descriptor {conn.fd} was closed"
                return
            if exc.errno == errno.EPERM:
                raise NotPermitted(errno.EPERM, permission_message(self.pid)) from None
            if exc.errno == errno.ESRCH:
                raise ProcessLookupError(errno.ESRCH, f"process {self.pid} has exited") from None
            raise
        self.fds[i] = fd  # ours from here: close() releases it whatever is raised next
        if os.fstat(fd).st_ino != conn.inode:
            self.fds[i] = -1
            os.close(fd)  # the number was reused for another file since we listed it
            self.gone[i] = f"descriptor {conn.fd} now names another file"

    def close(self) -> None:
        with signals_deferred():  # every duplicate is closed, Ctrl-C or not
            for i, fd in enumerate(self.fds):
                if fd >= 0:
                    self.fds[i] = -1
                    os.close(fd)

    def __enter__(self) -> Duplicates:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@final
class Process:
    """A pidfd on a running process, from which its descriptors are duplicated. Linux 5.6+."""

    def __init__(self, pid: int) -> None:
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise ValueError(f"pid must be a positive process id, not {pid!r}")
        self.pid = pid
        self.pidfd = pidfd_open(pid)

    def duplicate(self, conns: Sequence[Connection]) -> Duplicates:
        """Duplicates of the connections' descriptors (see ``Duplicates``)."""
        return Duplicates(self.pidfd, self.pid, conns)

    def chunks(self, conns: Sequence[Connection]) -> Iterator[Duplicates]:
        """Duplicates of the connections, a chunk at a time; each chunk is closed when the next
        one is made (and at the end), so this process never holds more than it may open."""
        size = _chunk_size()
        for start in range(0, len(conns), size):
            with self.duplicate(conns[start : start + size]) as dups:
                yield dups

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- reading and applying ------------------------------------------------------------------------


def _option_name(option: int) -> str:
    return Option(option).system_name


def read(pid: int, conns: Sequence[Connection]) -> list[ConnectionState]:
    """The keepalive values of a process's connections, read through duplicates (bulk path)."""
    states: list[ConnectionState] = []
    if not conns:
        return states
    with Process(pid) as proc:
        try:
            _read_chunks(proc, conns, states)
        except ProcessLookupError as exc:
            if not states:
                raise
            states.extend(ConnectionState(c, None, exc.strerror) for c in conns[len(states) :])
    return states


def _read_chunks(proc: Process, conns: Sequence[Connection], states: list[ConnectionState]) -> None:
    """Reads the connections a chunk at a time, appending one state per connection."""
    for dups in proc.chunks(conns):
        values = read_many(dups.fds)
        for i, conn in enumerate(dups.conns):
            if dups.gone[i] is not None:
                states.append(ConnectionState(conn, None, dups.gone[i]))
            elif values.errnos[i]:
                err = values.errnos[i]
                states.append(
                    ConnectionState(
                        conn, None, f"{os.strerror(err)} reading {_option_name(values.options[i])}"
                    )
                )
            else:
                states.append(ConnectionState(conn, values[i], None))


def dead_peer_after(settings: KeepAliveSettings) -> float | None:
    """Seconds of silence after which the kernel drops a connection with these values (see
    ``ka.policy.detection_time``); None when keepalive is off or a value is unknown."""
    return settings.detection_time


def predicted(before: KeepAliveSettings, policy: KeepAlive) -> KeepAliveSettings:
    """The values a socket with ``before`` will carry once ``policy`` is applied."""
    changed = {option.field: value for option, value in policy.spec.steps()}
    return settings_of(before.spec._replace(**changed))


def apply(pid: int, conns: Sequence[Connection], policy: KeepAlive, *, dry_run: bool = False) -> ApplyReport:
    """Apply ``policy`` to a process's connections through duplicates, and read each one back.

    Each chunk of descriptors is duplicated completely before any is changed, so a missing
    permission (``NotPermitted``, raised by the first duplicate) leaves every socket as it was.
    ``dry_run``: read only; each ``Change`` says what would change.
    A socket whose values read back differ from the policy is ``failed``.
    """
    require_policy(policy)
    changes: list[Change] = []
    if not conns:
        return ApplyReport(pid, policy, dry_run, changes)
    with Process(pid) as proc:
        try:
            for dups in proc.chunks(conns):
                before = read_many(dups.fds)
                if dry_run:
                    changes.extend(_planned(dups, before, policy))
                    continue
                result = apply_many(dups.fds, policy)
                after = read_many(dups.fds)
                changes.extend(_outcomes(dups, before, result, after, policy))
        except ProcessLookupError as exc:
            if not changes:
                raise  # nothing was touched: the caller reports the one reason
            # Exited part way: it holds the rest no more, as for a connection closed since listing.
            changes.extend(
                Change(c, "gone", None, None, str(exc.strerror or exc), 0, None, c.timer)
                for c in conns[len(changes) :]
            )
        except NotPermitted as exc:
            if not changes:
                raise  # nothing was touched: the caller reports the one reason
            # Lost permission part way: the rest is reported, not dropped.
            changes.extend(
                Change(
                    c, "failed", None, None, str(exc.strerror or exc), exc.errno or errno.EPERM, None, c.timer
                )
                for c in conns[len(changes) :]
            )
    if not dry_run:
        changes = _with_new_timers(pid, changes)
    return ApplyReport(pid, policy, dry_run, changes)


def _planned(dups: Duplicates, before: Any, policy: KeepAlive) -> Iterator[Change]:
    for i, conn in enumerate(dups.conns):
        if dups.gone[i] is not None:
            yield Change(conn, "gone", None, None, dups.gone[i], 0, None, conn.timer)
            continue
        if before.errnos[i]:
            err = before.errnos[i]
            option = _option_name(before.options[i])
            yield Change(
                conn, "failed", None, None, f"{os.strerror(err)} reading {option}", err, option, conn.timer
            )
            continue
        now = before[i]
        status = "already set" if now.matches(policy) else "would change"
        yield Change(conn, status, now, predicted(now, policy), None, 0, None, conn.timer)


def _outcomes(dups: Duplicates, before: Any, result: Any, after: Any, policy: KeepAlive) -> Iterator[Change]:
    mismatched = set(after.mismatches(policy))
    for i, conn in enumerate(dups.conns):
        if dups.gone[i] is not None:
            yield Change(conn, "gone", None, None, dups.gone[i], 0, None, conn.timer)
            continue
        was = None if before.errnos[i] else before[i]
        now = None if after.errnos[i] else after[i]
        err = result.errnos[i]
        if err:
            option = _option_name(result.options[i])
            yield Change(
                conn, "failed", was, now, f"{os.strerror(err)} setting {option}", err, option, conn.timer
            )
        elif i in mismatched:
            # Applied without an error, yet the kernel reports other values (or cannot be read).
            read_err = after.errnos[i]
            message = (
                f"{os.strerror(read_err)} reading it back"
                if read_err
                else "the values read back differ from the policy"
            )
            yield Change(conn, "failed", was, now, message, read_err, None, conn.timer)
        else:
            yield Change(conn, "applied", was, now, None, 0, None, conn.timer)


def _with_new_timers(pid: int, changes: list[Change]) -> list[Change]:
    try:
        table = tcp_table(pid, {c.connection.inode for c in changes})
    except OSError:
        return changes
    return [
        c._replace(timer=table[c.connection.inode].timer) if c.connection.inode in table else c
        for c in changes
    ]
