"""Scanning: the processes a selection picks, the connections each holds, and their values.

The TCP tables come once per network namespace: from the kernel's sock_diag netlink interface
for ka's own namespace (``sockdiag``: binary, filtered by state in the kernel, about twice as
fast as /proc/net/tcp at 18,000 sockets, measured in benchmarks/audit.py), and from
``/proc/PID/net/tcp`` and ``tcp6`` for a process in another namespace (a netlink socket answers
for the namespace it was made in; entering another needs CAP_SYS_ADMIN). Only the sockets the
picked processes hold are parsed.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable

from .._gc import collector_paused
from .filters import ConnectionFilter, ProcessFilter
from .flows import read
from .model import NotPermitted, ProcessConnections, Scan, Skipped, TcpEntry
from .procfs import command_name, held, permission_reason, proc_dir, socket_fds, tcp_table
from .sockdiag import dump

SOURCES = ("auto", "sock_diag", "procfs")


def _netns(pid: int | None) -> int | None:
    try:
        return os.stat(proc_dir(pid) / "ns/net").st_ino
    except OSError:
        return None


class Tables:
    """TCP tables by network namespace, each read once for the inodes asked of it.

    ``source``: ``auto`` (sock_diag for ka's own namespace, /proc elsewhere), ``sock_diag`` (the
    same, but an error where the kernel refuses), or ``procfs`` (always /proc). ``used`` records,
    per namespace inode, which was read.
    """

    def __init__(self, source: str = "auto", states: Iterable[str] | None = None) -> None:
        if source not in SOURCES:
            raise ValueError(f"TCP table source {source!r}: expected one of {', '.join(SOURCES)}")
        self.source: str = source
        self.states: frozenset[str] | None = None if states is None else frozenset(states)
        self.used: dict[int, str] = {}
        self._own = _netns(None)

    def read(self, pid: int, netns: int | None, inodes: set[int]) -> dict[int, TcpEntry]:
        """The entries for ``inodes`` in process ``pid``'s network namespace ``netns``."""
        if self.source != "procfs" and netns is not None and netns == self._own:
            try:
                table = dump(self.states, inodes)
            except OSError:
                if self.source == "sock_diag":
                    raise
            else:
                self.used[netns] = "sock_diag"
                return table
        try:
            table = tcp_table(pid, inodes)
        except FileNotFoundError:
            raise ProcessLookupError(errno.ESRCH, f"process {pid} has exited") from None
        self.used[netns if netns is not None else -pid] = "procfs"
        return table


def scan(
    processes: ProcessFilter | None = None,
    connections: ConnectionFilter | None = None,
    *,
    local_port: int | None = None,
    remote_port: int | None = None,
    states: frozenset[str] | None = None,
    source: str = "auto",
) -> Scan:
    """The processes ``processes`` picks (default: every process but this one), read as ``read``
    reads one: those holding connections that pass ``connections`` (or the ``local_port``,
    ``remote_port`` and ``states`` keywords, as ``select`` takes them), and those skipped: without
    ptrace permission (``Skipped.permission``; the reason names the cause, as
    ``permission_reason`` does) or with trouble reading them. A process that exits while it is
    looked at is left out. ``source``: see ``Tables``.
    """
    picked = processes or ProcessFilter()
    wanted = connections or ConnectionFilter(local_port, remote_port, states=states)
    with collector_paused():
        return _scan(picked, wanted, source)


def _scan(picked: ProcessFilter, wanted: ConnectionFilter, source: str) -> Scan:
    skipped: list[Skipped] = []
    me = os.getpid()
    held_fds: dict[int, dict[int, int]] = {}
    by_netns: dict[int | None, list[int]] = {}
    for pid in picked.candidates():
        if pid == me and pid not in picked.pids:
            continue
        try:
            fds = socket_fds(pid)
        except NotPermitted:
            skipped.append(Skipped(pid, command_name(pid), permission_reason(pid), True))
            continue
        except (ProcessLookupError, FileNotFoundError):
            continue  # exited while we looked
        except OSError as exc:  # one process's trouble does not end the listing
            skipped.append(Skipped(pid, command_name(pid), str(exc)))
            continue
        if fds:
            held_fds[pid] = fds
            by_netns.setdefault(_netns(pid), []).append(pid)
    tables = Tables(source, wanted.states)
    results: dict[int, ProcessConnections] = {}
    for netns, pids in by_netns.items():
        inodes = {inode for pid in pids for inode in held_fds[pid].values()}
        try:
            table = tables.read(pids[0], netns, inodes)
        except ProcessLookupError:
            table = {}
            for pid in pids:  # the first exited: any other member reads the same namespace
                try:
                    table = tables.read(pid, netns, inodes)
                    break
                except ProcessLookupError:
                    continue
        for pid in pids:
            conns = wanted.pick(held(pid, held_fds[pid], table))
            if not conns:
                continue
            try:
                results[pid] = ProcessConnections(pid, read(pid, conns))
            except NotPermitted:
                skipped.append(Skipped(pid, command_name(pid), permission_reason(pid), True))
            except ProcessLookupError:
                continue
            except OSError as exc:
                skipped.append(Skipped(pid, command_name(pid), str(exc)))
    found = [results[pid] for pid in sorted(results)]
    skipped.sort(key=lambda s: s.pid)
    return Scan(found, skipped, {str(k): v for k, v in tables.used.items()})
