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
from typing import NamedTuple

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


def _endpoint(text: str, family: str, addresses: dict[str, str]) -> Endpoint:
    """``ADDRESS:PORT`` in hex; ``addresses``: the text of each hex address seen (a table holds
    few distinct addresses)."""
    address, _, port = text.partition(":")
    shown = addresses.get(address)
    if shown is None:
        shown = addresses[address] = _ipv4(address) if family == "ipv4" else _ipv6(address)
    return Endpoint(shown, int(port, 16))


def _entry(f: list[str], family: str, addresses: dict[str, str]) -> TcpEntry:
    """A data line's first ten fields (split at whitespace) as an entry.

    A state or timer code these tables do not know (a newer kernel's) is named by its number,
    ``state-13`` or ``timer-12``, not dropped."""
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
        int(f[9]),
        family,
        _endpoint(f[1], family, addresses),
        _endpoint(f[2], family, addresses),
        TCP_STATES.get(state) or f"state-{state}",
        timer,
        int(f[7]),
    )


def parse_tcp_line(line: str, family: str) -> TcpEntry:
    """One data line of ``/proc/net/tcp`` (family ``ipv4``) or ``tcp6`` (``ipv6``)."""
    return _entry(line.split(), family, {})


def tcp_table(pid: int | None = None, inodes: set[int] | None = None) -> dict[int, TcpEntry]:
    """TCP sockets of a process's network namespace (``None``: this process's), by inode.

    ``inodes``: keep only these (parsing is skipped for the rest). TIME_WAIT entries (inode 0)
    are left out: no process holds them.
    """
    base = proc_dir(pid) / "net"
    table: dict[int, TcpEntry] = {}
    for name, family in (("tcp", "ipv4"), ("tcp6", "ipv6")):
        addresses: dict[str, str] = {}
        try:
            with open(base / name) as f:
                next(f, None)  # header
                for line in f:
                    # The inode column is the tenth: the line is split once, up to it.
                    fields = line.split(None, 10)
                    if len(fields) < 10:
                        continue
                    inode = int(fields[9])
                    if inode == 0 or (inodes is not None and inode not in inodes):
                        continue
                    table[inode] = _entry(fields, family, addresses)
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
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2


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


def command_line(pid: int) -> str:
    """The process's command line, arguments joined by spaces (``/proc/PID/cmdline``); empty for a
    kernel thread, a zombie or a process that cannot be read."""
    try:
        raw = (proc_dir(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


# include/linux/sched.h: PF_KTHREAD, in the flags field (the 9th) of /proc/PID/stat.
_PF_KTHREAD = 0x00200000


def is_kernel_thread(pid: int) -> bool:
    """Whether ``pid`` is a kernel thread (it holds no descriptors); False when it cannot be read."""
    try:
        stat = (proc_dir(pid) / "stat").read_text()
    except OSError:
        return False
    # The command name (field 2) is in parentheses and may hold spaces: count from its end.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return bool(int(fields[6]) & _PF_KTHREAD)
    except (IndexError, ValueError):
        return False


def _ids(pid: int | None, field: str) -> tuple[int, ...]:
    """The ``Uid`` or ``Gid`` line of /proc/PID/status: real, effective, saved, filesystem."""
    try:
        for line in (proc_dir(pid) / "status").read_text().splitlines():
            name, _, values = line.partition(":")
            if name == field:
                return tuple(int(v) for v in values.split())
    except (OSError, ValueError):
        pass
    return ()


def _descends_from(pid: int, ancestor: int) -> bool:
    """Whether process ``pid`` is ``ancestor`` or one of its descendants (walking PPid)."""
    seen = 0
    current: int | None = pid
    while current is not None and current > 0 and seen < 4096:
        if current == ancestor:
            return True
        current = status_value(current, "PPid")
        seen += 1
    return False


def _namespace(pid: int | None, kind: str) -> int | None:
    try:
        return os.stat(proc_dir(pid) / "ns" / kind).st_ino
    except OSError:
        return None


class Obstacles(NamedTuple):
    """What keeps this process from reaching another's descriptors (``ptrace_obstacles``).

    ``causes``: clauses in the kernel's order of checks. ``remedy``: one clause saying what would
    let ka in: CAP_SYS_PTRACE where it overrides the causes, else (or also) the other way.
    """

    causes: list[str]
    remedy: str


def ptrace_obstacles(pid: int) -> Obstacles:
    """Why this process may not reach ``pid``'s descriptors, as the kernel decides it
    (``__ptrace_may_access``, commoncap's and Yama's checks), read from /proc.

    ``pidfd_getfd`` needs ``PTRACE_MODE_ATTACH_REALCREDS`` (Yama applies), listing
    ``/proc/PID/fd`` needs ``PTRACE_MODE_READ_FSCREDS``. Without CAP_SYS_PTRACE both need: the
    same uid (real, effective and saved) and gid, a dumpable process, every capability it holds
    (permitted set), the same user namespace, and under Yama scope 1 to be its ancestor; scope 2
    asks for CAP_SYS_PTRACE, scope 3 refuses everyone. A cause that cannot be read is left out.
    """
    me = os.geteuid()
    mine = _capabilities(None, "CapEff")
    ptrace = mine is not None and bool(mine >> CAP_SYS_PTRACE & 1)
    scope = _ptrace_scope()
    if scope == 3:
        return Obstacles(
            ["kernel.yama.ptrace_scope is 3: no process may reach another's, root included"],
            "reboot: nothing else lowers kernel.yama.ptrace_scope from 3",
        )
    uids = _ids(pid, "Uid")[:3]
    dac = mine is not None and bool(mine & (1 << CAP_DAC_OVERRIDE | 1 << CAP_DAC_READ_SEARCH))
    if ptrace and not dac and uids and any(uid != me for uid in uids):
        # /proc/PID/fd is mode 0500 for its owner: ptrace permission does not open it (proc_fd_permission).
        return Obstacles(
            [
                f"it runs as uid {uids[1]} and ka as uid {me}, and listing another user's /proc/PID/fd "
                "needs CAP_DAC_READ_SEARCH (or CAP_DAC_OVERRIDE), which ka lacks"
            ],
            "give ka CAP_DAC_READ_SEARCH besides CAP_SYS_PTRACE",
        )
    if ptrace:
        return Obstacles(
            [
                "ka holds CAP_SYS_PTRACE, so a security module (AppArmor, SELinux) or a seccomp "
                "filter refused it"
            ],
            "allow ptrace (read and attach) of this process in that policy",
        )
    causes: list[str] = []
    other_way: list[str] = []  # what reaches it without CAP_SYS_PTRACE
    possible = True  # False once a cause only CAP_SYS_PTRACE overrides is found
    gids = _ids(pid, "Gid")[:3]
    if uids and any(uid != me for uid in uids):
        if len(set(uids)) == 1:
            causes.append(f"it runs as uid {uids[0]} and ka as uid {me}")
            other_way.append(f"run ka as uid {uids[0]}")
        else:
            real, effective, saved = uids
            causes.append(
                f"it runs with uids {real} (real), {effective} (effective) and {saved} (saved), a "
                f"set-user-id program, and ka as uid {me}"
            )
            possible = False
    elif gids and any(gid != os.getegid() for gid in gids):
        causes.append(
            f"it runs with gid {', '.join(map(str, sorted(set(gids))))} and ka with gid {os.getegid()}"
        )
        possible = False
    elif uids and _proc_owner(pid) not in (None, uids[1]):
        causes.append("it is not dumpable (a set-id program, or prctl(PR_SET_DUMPABLE, 0))")
        possible = False
    theirs = _capabilities(pid, "CapPrm")
    permitted = _capabilities(None, "CapPrm")
    if mine is not None and theirs is not None:
        lacking = theirs & ~(mine if permitted is None else mine & permitted)
        if lacking:
            causes.append(f"it holds capabilities ka lacks ({_cap_names(lacking)})")
            other_way.append("with every capability it holds")
    theirs_ns, mine_ns = _namespace(pid, "user"), _namespace(None, "user")
    if theirs_ns is not None and mine_ns is not None and theirs_ns != mine_ns:
        causes.append(f"it runs in another user namespace (user:[{theirs_ns}])")
        possible = False
    if scope == 2:
        causes.append(
            "kernel.yama.ptrace_scope is 2: only holders of CAP_SYS_PTRACE may reach another process"
        )
        possible = False
    elif scope == 1 and not _descends_from(pid, os.getpid()):
        causes.append("kernel.yama.ptrace_scope is 1: only a process's ancestors may reach it")
        other_way.append("with kernel.yama.ptrace_scope set to 0")
    causes.append("ka has no CAP_SYS_PTRACE" + (" though it runs as root" if me == 0 else ""))
    remedy = (
        "give ka CAP_SYS_PTRACE (this root process runs without it: a container's, capsh's or "
        "systemd's CapabilityBoundingSet narrowed it)"
        if me == 0
        else "run ka with CAP_SYS_PTRACE (sudo)"
    )
    if possible and other_way:
        first, *rest = other_way
        remedy += ", or " + (first if first.startswith("run") else "run ka " + first)
        remedy += "".join(" " + part for part in rest)
    return Obstacles(causes, remedy)


def _proc_owner(pid: int) -> int | None:
    """The owner of /proc/PID: the process's effective uid, or root when it is not dumpable."""
    try:
        return os.stat(proc_dir(pid)).st_uid
    except OSError:
        return None


def permission_reason(pid: int) -> str:
    """Why ka may not reach ``pid``'s descriptors and what would let it, as one sentence about
    "it" (the process): ``ptrace_obstacles`` in words."""
    causes, remedy = ptrace_obstacles(pid)
    return f"{'; '.join(causes)}. To reach it, {remedy}."


def permission_message(pid: int) -> str:
    """A sentence naming process ``pid`` and why ka may not reach its descriptors, with what
    would let it (see ``ptrace_obstacles``)."""
    return f"ka needs ptrace permission over process {pid} ({command_name(pid)}): {permission_reason(pid)}"


def socket_fds(pid: int) -> dict[int, int]:
    """The socket descriptors of a process: {fd: socket inode}.

    Raises ``NotPermitted`` (a PermissionError) when the caller may not list them, and
    ``ProcessLookupError`` when there is no such process.
    """
    fd_dir = proc_dir(pid) / "fd"
    found: dict[int, int] = {}
    try:
        directory = os.open(fd_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except PermissionError:
        raise NotPermitted(errno.EPERM, permission_message(pid)) from None
    except FileNotFoundError:
        raise ProcessLookupError(errno.ESRCH, f"there is no process {pid}") from None
    try:
        try:
            entries = os.listdir(directory)
        except PermissionError:
            raise NotPermitted(errno.EPERM, permission_message(pid)) from None
        readlink = os.readlink
        for name in entries:
            try:
                # Relative to the open directory: no path walk per descriptor (a quarter faster).
                target = readlink(name, dir_fd=directory)
            except FileNotFoundError:
                continue  # closed while we looked
            except PermissionError:
                raise NotPermitted(errno.EPERM, permission_message(pid)) from None
            if target[:8] == "socket:[":
                found[int(name)] = int(target[8:-1])
    finally:
        os.close(directory)
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
    return held(pid, fds, table)


def held(pid: int, fds: dict[int, int], table: dict[int, TcpEntry]) -> list[Connection]:
    """The connections behind a process's socket descriptors ({fd: inode}, as ``socket_fds``
    gives them) that a TCP table lists, by descriptor number; other sockets are left out."""
    result = []
    entry_of = table.get
    for fd in sorted(fds):
        entry = entry_of(fds[fd])
        if entry is None:
            continue  # a Unix or UDP socket, or TCP from another namespace
        inode, family, local, remote, state, timer, _uid = entry
        result.append(Connection(pid, fd, inode, family, local, remote, state, timer))
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
