"""Reading /proc: a process's socket descriptors, its network namespace's TCP table, its status.

``/proc/PID/fd`` names each socket descriptor (``socket:[inode]``); ``/proc/PID/net/tcp`` and
``tcp6`` (the process's own network namespace) give each socket inode its addresses, state and
running timer: the kernel's ``tr``, ``tm->when`` and ``timeout`` fields, which ``ss -tno`` shows
as ``timer:(keepalive,59sec,0)``.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from pathlib import Path

from .model import Connection, Endpoint, NotPermitted, TcpEntry, Timer

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


def proc_dir(pid: int | None) -> Path:
    """``/proc/PID``, or ``/proc/self`` for None."""
    return PROC / ("self" if pid is None else str(pid))


def status_value(pid: int | None, field: str, column: int = 0, base: int = 10) -> int | None:
    """A number from ``/proc/PID/status`` (None: this process): value ``column`` of line ``field``
    (``Uid`` column 1 is the effective uid; ``CapEff`` is read with base 16), or None when the
    process, the line or the number is not there."""
    try:
        for line in (proc_dir(pid) / "status").read_text().splitlines():
            name, _, values = line.partition(":")
            if name == field:
                return int(values.split()[column], base)
    except (OSError, ValueError, IndexError):
        pass
    return None


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
    """One data line of ``/proc/net/tcp`` (family ``ipv4``) or ``tcp6`` (``ipv6``).

    A state or timer code these tables do not know (a newer kernel's) is named by its number,
    ``state-13`` or ``timer-12``, not dropped."""
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
    base = proc_dir(pid) / "net"
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
    return status_value(pid, field, base=16)


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
    return status_value(pid, "Uid", 1)


def thread_group(pid: int) -> int | None:
    """The process (thread group) that thread ``pid`` belongs to; ``pid`` itself for a process,
    None when there is no such thread. /proc/TID exists for every thread, though unlisted."""
    return status_value(pid, "Tgid")


def command_name(pid: int) -> str:
    """The process's command name (``/proc/PID/comm``), or ``?``."""
    try:
        return (proc_dir(pid) / "comm").read_text().strip()
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
    fd_dir = proc_dir(pid) / "fd"
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
            if proc_dir(pid).exists():
                raise
            raise ProcessLookupError(errno.ESRCH, f"process {pid} has exited") from None
    else:
        try:
            netns = os.stat(proc_dir(pid) / "ns/net").st_ino
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
                pid=pid,
                fd=fd,
                inode=entry.inode,
                family=entry.family,
                local=entry.local,
                remote=entry.remote,
                state=entry.state,
                timer=entry.timer,
            )
        )
    return result


def process_ids() -> list[int]:
    """Every process id in /proc, ascending."""
    return sorted(int(name) for name in os.listdir(PROC) if name.isdigit())


def netns_name(pid: int | None = None) -> str:
    """The network namespace of a process (``None``: this one), e.g. ``net:[4026531840]``."""
    try:
        return os.readlink(proc_dir(pid) / "ns/net")
    except OSError:
        return "?"
