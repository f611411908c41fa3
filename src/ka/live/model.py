"""The shapes ``ka.live`` speaks in: endpoints, timers, connections, their states and changes."""

from __future__ import annotations

import dataclasses
import enum
from typing import NamedTuple

from ..policy import KeepAlive
from ..results import KeepAliveSettings


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


class Status(str, enum.Enum):
    """What became of one connection in ``apply``; each compares equal to its text."""

    APPLIED = "applied"
    FAILED = "failed"
    GONE = "gone"  # closed (or its process exited) before ka reached it
    WOULD_CHANGE = "would change"  # dry run
    ALREADY_SET = "already set"  # dry run

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


# The statuses an apply can end with, in the order a summary lists them.
APPLY_STATUSES = (Status.APPLIED, Status.FAILED, Status.GONE)
DRY_RUN_STATUSES = (Status.WOULD_CHANGE, Status.ALREADY_SET, Status.GONE, Status.FAILED)


@dataclasses.dataclass(frozen=True)
class Change:
    """What ``apply`` did to one connection.

    ``status``: a ``Status``. ``before``/``after``: values read before and after (``after`` is
    the policy's outcome for a dry run, None where unknown). ``timer``: the kernel's timer after
    the change (the one before for a dry run). ``error``, ``errno`` and ``option`` (the option
    that failed, where one did) say why a connection is ``failed`` or ``gone``.
    """

    connection: Connection
    status: Status
    timer: Timer
    before: KeepAliveSettings | None = None
    after: KeepAliveSettings | None = None
    error: str | None = None
    errno: int = 0
    option: str | None = None


@dataclasses.dataclass(frozen=True)
class ApplyReport:
    """The outcome of ``apply``: one ``Change`` per matched connection, in listing order."""

    pid: int
    policy: KeepAlive
    dry_run: bool
    changes: list[Change]

    def count(self, status: str) -> int:
        """How many connections ended with this status (a ``Status``, or its text)."""
        return sum(1 for c in self.changes if c.status == status)

    @property
    def ok(self) -> bool:
        """True when no connection failed (gone ones closed on their own and do not count)."""
        return self.count(Status.FAILED) == 0

    @property
    def summary(self) -> dict[Status, int]:
        """How many connections ended with each status an apply (or a dry run) can end with."""
        return {
            status: self.count(status) for status in (DRY_RUN_STATUSES if self.dry_run else APPLY_STATUSES)
        }


class Skipped(NamedTuple):
    """A process ``scan`` could not read, and why: ``permission`` when ptrace permission is what
    it lacks (``reason`` then names the cause, as ``permission_message`` does)."""

    pid: int
    command: str
    reason: str
    permission: bool = False


class ProcessConnections(NamedTuple):
    """A process ``scan`` read: its matching connections and their values."""

    pid: int
    states: list[ConnectionState]


class Scan(NamedTuple):
    """What ``scan`` found: the processes holding matching connections, those skipped, and where
    each network namespace's TCP table came from (``sources``: namespace inode as text ->
    ``sock_diag`` or ``procfs``)."""

    found: list[ProcessConnections]
    skipped: list[Skipped]
    sources: dict[str, str]


class WouldRetag(OSError):
    """Reaching the process's sockets would change their cgroup v1 ``net_cls``/``net_prio`` tags
    (pidfd_getfd re-tags a socket with the receiver's); ka leaves the process alone."""


class NotPermitted(PermissionError):
    """The caller lacks ptrace permission over the process; the message names what is missing."""
