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

The modules: ``model`` (the data types), ``procfs`` (reading /proc), ``filters`` (checking ports,
pids and states; picking connections), ``pidfd`` (the syscalls and the duplicates they make) and
``flows`` (reading and applying), ``scanning`` (every process). Every public name is here too.
"""

from __future__ import annotations

from .filters import (
    ConnectionFilter,
    ProcessFilter,
    Remote,
    check_pid,
    check_port,
    compile_name,
    normalize_states,
    parse_remote,
    select,
)
from .flows import apply, dead_peer_after, predicted, read
from .model import (
    APPLY_STATUSES,
    DRY_RUN_STATUSES,
    ApplyReport,
    Change,
    Connection,
    ConnectionState,
    Endpoint,
    NotPermitted,
    ProcessConnections,
    Scan,
    Skipped,
    Status,
    TcpEntry,
    Timer,
    WouldRetag,
)
from .pidfd import (
    MAX_CHUNK,
    SYS_PIDFD_GETFD,
    SYS_PIDFD_OPEN,
    Duplicates,
    Process,
    check_platform,
    chunk_size,
    pidfd_getfd,
    pidfd_open,
)
from .procfs import (
    CAP_SYS_PTRACE,
    CAPABILITY_NAMES,
    PROC,
    STATE_GROUPS,
    TCP_STATES,
    TIMER_NAMES,
    Obstacles,
    command_line,
    command_name,
    connections,
    held,
    is_kernel_thread,
    netns_name,
    parse_tcp_line,
    permission_message,
    permission_reason,
    proc_dir,
    process_ids,
    process_owner,
    ptrace_obstacles,
    socket_fds,
    status_value,
    tcp_table,
    thread_group,
)
from .scanning import SOURCES, Tables, scan
from .sockdiag import dump as sock_diag_dump

__all__ = [
    "APPLY_STATUSES",
    "CAPABILITY_NAMES",
    "CAP_SYS_PTRACE",
    "DRY_RUN_STATUSES",
    "MAX_CHUNK",
    "PROC",
    "SOURCES",
    "STATE_GROUPS",
    "SYS_PIDFD_GETFD",
    "SYS_PIDFD_OPEN",
    "TCP_STATES",
    "TIMER_NAMES",
    "ApplyReport",
    "Change",
    "Connection",
    "ConnectionFilter",
    "ConnectionState",
    "Duplicates",
    "Endpoint",
    "NotPermitted",
    "Obstacles",
    "Process",
    "ProcessConnections",
    "ProcessFilter",
    "Remote",
    "Scan",
    "Skipped",
    "Status",
    "Tables",
    "TcpEntry",
    "Timer",
    "WouldRetag",
    "apply",
    "check_pid",
    "check_platform",
    "check_port",
    "chunk_size",
    "command_line",
    "command_name",
    "compile_name",
    "connections",
    "dead_peer_after",
    "held",
    "is_kernel_thread",
    "netns_name",
    "normalize_states",
    "parse_remote",
    "parse_tcp_line",
    "permission_message",
    "permission_reason",
    "pidfd_getfd",
    "pidfd_open",
    "predicted",
    "proc_dir",
    "process_ids",
    "process_owner",
    "ptrace_obstacles",
    "read",
    "scan",
    "select",
    "sock_diag_dump",
    "socket_fds",
    "status_value",
    "tcp_table",
    "thread_group",
]
