"""Which listeners of a cgroup's processes the program does not cover.

A socket belongs to the cgroup its process was in when it created the socket, and an accepted
connection to its listener's cgroup. A listener created before its process joined the cgroup
(a server moved into a cgroup after it started listening, a socket inherited from a parent in
another cgroup, systemd's socket activation from PID 1's cgroup) therefore passes connections
the program never sees. This finds them: the processes' listening sockets (``ka.live``, ptrace
permission), each one's cgroup from sock_diag, in each process's network namespace.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, NamedTuple

from .. import live
from ..live import cgroup as cgroups
from ..live import netns, sockdiag


class Listener(NamedTuple):
    """A listening socket held by a process of the cgroup but belonging to another cgroup:
    connections it accepts are not guarded. ``socket_cgroup``: that cgroup's path (``id N`` when
    it cannot be found)."""

    pid: int
    command: str
    fd: int
    inode: int
    local: live.Endpoint
    socket_cgroup: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "command": self.command,
            "fd": self.fd,
            "inode": self.inode,
            "local": {"address": self.local.address, "port": self.local.port},
            "socket_cgroup": self.socket_cgroup,
        }


class Unreadable(NamedTuple):
    """A process whose sockets could not be read, and why."""

    pid: int
    reason: str


def uncovered_listeners(cgroup: cgroups.Cgroup) -> tuple[list[Listener], list[Unreadable]]:
    """Listeners held by the processes of ``cgroup`` (and below) that belong to no cgroup of
    that subtree, one per socket; and the processes that could not be read."""
    inside = {cgroups.cgroup_id(c) for c in cgroups.subtree(cgroup)}
    by_netns: dict[int, list[tuple[int, live.Connection]]] = defaultdict(list)
    unreadable: list[Unreadable] = []
    for pid in cgroups.pids(cgroup):
        try:
            listening = [c for c in live.connections(pid) if c.state == "listen"]
            if listening:
                by_netns[netns.netns_id(pid)].extend((pid, c) for c in listening)
        except ProcessLookupError:
            continue
        except OSError as exc:
            unreadable.append(Unreadable(pid, str(exc.strerror or exc)))
    found: dict[int, Listener] = {}
    paths: dict[int, str] = {}
    for held in by_netns.values():
        first_pid = held[0][0]
        try:
            owners = {
                s.inode: s.cgroup_id
                for s in netns.run_in_netns_of(first_pid, lambda: sockdiag.tcp_sockets(["listen"]))
            }
        except OSError as exc:
            unreadable.extend(Unreadable(pid, f"sock_diag: {exc.strerror or exc}") for pid, _ in held)
            continue
        for pid, conn in held:
            owner = owners.get(conn.inode)
            if owner is None or owner in inside or conn.inode in found:
                continue
            if owner not in paths:
                where = cgroups.by_id(owner)
                paths[owner] = where.path if where else f"id {owner}"
            found[conn.inode] = Listener(
                pid, live.command_name(pid), conn.fd, conn.inode, conn.local, paths[owner]
            )
    return sorted(found.values(), key=lambda listener: (listener.pid, listener.fd)), unreadable
