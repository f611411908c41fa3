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
pids and states; picking processes and connections), ``pidfd`` (the syscalls and the duplicates
they make), ``flows`` (reading and applying), ``scanning`` (every process), ``sockdiag`` (the TCP
table through netlink), ``netns`` (running in another network namespace). Every public name
(``__all__``) is here too; ``cgroup`` (cgroup v2: a process's or unit's cgroup and its
processes) is a module of its own.
"""

from __future__ import annotations

from .filters import (
    ConnectionFilter,
    ProcessFilter,
    Remote,
    check_pid,
    check_port,
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
    Timer,
    WouldRetag,
)
from .pidfd import check_platform
from .procfs import (
    CAP_SYS_PTRACE,
    STATE_GROUPS,
    TCP_STATES,
    command_line,
    command_name,
    connections,
    netns_name,
    permission_message,
    permission_reason,
    process_owner,
)
from .scanning import SOURCES, scan

# isort: split
# The machinery below the public names: importable here for ka's own commands and tests, but not
# the public API (not in __all__, not in the reference); reach it through its module.
from .filters import compile_name  # noqa: F401
from .model import TcpEntry  # noqa: F401
from .pidfd import (  # noqa: F401
    MAX_CHUNK,
    SYS_PIDFD_GETFD,
    SYS_PIDFD_OPEN,
    Duplicates,
    Process,
    chunk_size,
    pidfd_getfd,
    pidfd_open,
)
from .procfs import (  # noqa: F401
    CAPABILITY_NAMES,
    PROC,
    TIMER_NAMES,
    Obstacles,
    held,
    is_kernel_thread,
    parse_tcp_line,
    proc_dir,
    process_ids,
    ptrace_obstacles,
    socket_fds,
    status_value,
    tcp_table,
    thread_group,
)
from .scanning import Tables  # noqa: F401
from .sockdiag import dump as sock_diag_dump  # noqa: F401

__all__ = [
    "APPLY_STATUSES",
    "CAP_SYS_PTRACE",
    "DRY_RUN_STATUSES",
    "SOURCES",
    "STATE_GROUPS",
    "TCP_STATES",
    "ApplyReport",
    "Change",
    "Connection",
    "ConnectionFilter",
    "ConnectionState",
    "Endpoint",
    "NotPermitted",
    "ProcessConnections",
    "ProcessFilter",
    "Remote",
    "Scan",
    "Skipped",
    "Status",
    "Timer",
    "WouldRetag",
    "apply",
    "check_pid",
    "check_platform",
    "check_port",
    "command_line",
    "command_name",
    "connections",
    "dead_peer_after",
    "netns_name",
    "normalize_states",
    "parse_remote",
    "permission_message",
    "permission_reason",
    "predicted",
    "process_owner",
    "read",
    "scan",
    "select",
]
