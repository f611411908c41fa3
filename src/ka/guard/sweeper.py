"""The sweep: the policy on the connections a cgroup already has, which the sock_ops program
(it acts when a connection is established) never sees.

Two methods; ``auto`` takes the first that can run and says why it could not use the iterator:

- ``iterator`` (Linux 5.15+, the kernel's BTF, CAP_BPF and CAP_PERFMON): a tcp iterator program
  visits every TCP socket of a network namespace inside the kernel and sets the policy on those
  whose cgroup is the target or below it, listeners excepted. It runs in ka's own network
  namespace and in each one the cgroup's processes use. Sockets are matched by the cgroup they
  belong to, wherever their descriptors are; no ptrace permission is needed.
- ``processes``: ``ka apply --pid`` on each process of the cgroup (``ka.live``: pidfd_getfd,
  ptrace permission) for its connections in every state but listen. Sockets are matched by the
  process that holds them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from .. import live
from ..live import cgroup as cgroups
from ..live import netns
from ..live.procfs import STATE_GROUPS
from ..policy import KeepAlive
from . import checks, loader, programs, syscall
from .attachment import KEY0
from .btf import VMLINUX, Btf, BtfError
from .coverage import Listener, Unreadable, uncovered_listeners
from .errors import GuardError, Unsupported
from .loader import Fd
from .programs import COUNTERS, POLICY, Counters, PolicyRecord
from .syscall import AttachType, MapType, ProgType

METHODS = ("auto", "iterator", "processes")


class Reach(NamedTuple):
    """What one method did in one network namespace.

    ``seen``: TCP sockets the iterator visited, or connections the processes held; ``handled``:
    connections of the cgroup it acted on; ``applied``: those that got the whole policy;
    ``kept_own``: left alone (``keep_own``, keepalive already on); ``failed``: options that failed
    (iterator) or connections that failed (processes); ``last_error``: the latest errno.
    """

    method: str
    netns: str
    seen: int
    handled: int
    applied: int
    kept_own: int
    failed: int
    last_error: int = 0


@dataclasses.dataclass(frozen=True)
class SweepReport:
    """The sweep of one cgroup: the method used (and why not the iterator, under ``auto``), what it
    reached per network namespace, the processes it could not read, and the listeners no program
    covers."""

    cgroup: str
    policy: KeepAlive
    keep_own: bool
    method: str
    fallback_reason: str | None
    reaches: list[Reach]
    unreadable: list[Unreadable]
    listeners: list[Listener]

    @property
    def handled(self) -> int:
        return sum(r.handled for r in self.reaches)

    @property
    def applied(self) -> int:
        return sum(r.applied for r in self.reaches)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.reaches)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cgroup": self.cgroup,
            "policy": str(self.policy),
            "keep_own": self.keep_own,
            "method": self.method,
            "fallback_reason": self.fallback_reason,
            "handled": self.handled,
            "applied": self.applied,
            "failed": self.failed,
            "reaches": [r._asdict() for r in self.reaches],
            "unreadable": [u._asdict() for u in self.unreadable],
            "uncovered_listeners": [listener.as_dict() for listener in self.listeners],
        }


def _netns_name(identifier: int) -> str:
    return f"net:[{identifier}]"


def _namespaces(cgroup: cgroups.Cgroup) -> dict[int, int | None]:
    """Network namespace id -> a process in it (None: ka's own), ka's own first."""
    spaces: dict[int, int | None] = {netns.netns_id(None): None}
    for pid in cgroups.pids(cgroup):
        with contextlib.suppress(OSError):
            spaces.setdefault(netns.netns_id(pid), pid)
    return spaces


def iterator_layout(keep_own: bool, btf_path: Path = VMLINUX) -> programs.IteratorLayout:
    """The iterator's offsets, once every piece it needs is there; else the error naming the
    missing piece (``Unsupported``, ``NotPermitted``)."""
    checks.require_kernel("iterator")
    if keep_own:
        checks.require_kernel("keep_own")
    checks.require_capabilities(iterator=True)
    try:
        return programs.iterator_layout(Btf.load(btf_path))
    except BtfError as exc:
        raise Unsupported(f"the sweep's iterator cannot run: {exc}", "btf") from exc


@contextlib.contextmanager
def _iterator(
    layout: programs.IteratorLayout, record: PolicyRecord, ids: set[int]
) -> Iterator[tuple[Fd, Fd]]:
    """The loaded iterator program and its counters map."""
    with contextlib.ExitStack() as stack:
        policy_map = stack.enter_context(
            loader.create_map(MapType.ARRAY, 4, POLICY.size, 1, "ka_sweep_policy")
        )
        syscall.map_update(policy_map.fd, KEY0, record.pack())
        counters = stack.enter_context(
            loader.create_map(MapType.ARRAY, 4, COUNTERS.size, 1, "ka_sweep_count")
        )
        cgroup_map = stack.enter_context(
            loader.create_map(MapType.HASH, 8, 1, max(1, len(ids)), "ka_sweep_cgroup")
        )
        for identifier in ids:
            syscall.map_update(cgroup_map.fd, struct.pack("=Q", identifier), b"\1")
        program = stack.enter_context(
            loader.load(
                programs.iterator_program(layout),
                ProgType.TRACING,
                "ka_sweep",
                {"policy": policy_map, "counters": counters, "cgroups": cgroup_map},
                expected_attach_type=AttachType.TRACE_ITER,
                attach_btf_id=layout.iter_func_id,
            )
        )
        yield program, counters


def _run_iterator(program: Fd) -> None:
    """Create the iterator in this thread's network namespace and read it to the end (the program
    runs once per socket as it is read; it writes nothing)."""
    with Fd(syscall.link_create(program.fd, 0, AttachType.TRACE_ITER), "iterator link") as link:
        iterator = Fd(syscall.iter_create(link.fd), "iterator")
    with iterator:
        while os.read(iterator.fd, 1 << 16):
            pass


def _iterator_reaches(
    layout: programs.IteratorLayout, record: PolicyRecord, cgroup: cgroups.Cgroup
) -> list[Reach]:
    ids = {cgroups.cgroup_id(c) for c in cgroups.subtree(cgroup)}
    reaches = []
    with _iterator(layout, record, ids) as (program, counters):
        for identifier, pid in _namespaces(cgroup).items():
            syscall.map_update(counters.fd, KEY0, bytes(COUNTERS.size))
            try:
                if pid is None:
                    _run_iterator(program)
                else:
                    netns.run_in_netns_of(pid, lambda: _run_iterator(program))
            except OSError as exc:  # a BpfError, or entering the namespace (CAP_SYS_ADMIN)
                raise GuardError(
                    f"the sweep's iterator failed in {_netns_name(identifier)}: {exc}",
                    "iterator",
                    exc.errno or 0,
                ) from exc
            c = Counters.from_values(syscall.map_lookup(counters.fd, KEY0, COUNTERS.size))
            reaches.append(
                Reach(
                    "iterator",
                    _netns_name(identifier),
                    c.seen,
                    c.handled,
                    c.applied,
                    c.kept_own,
                    c.options_failed,
                    c.last_error,
                )
            )
    return reaches


CONNECTED = STATE_GROUPS["connected"]


def _process_reaches(
    cgroup: cgroups.Cgroup, policy: KeepAlive, keep_own: bool
) -> tuple[list[Reach], list[Unreadable]]:
    totals: dict[int, list[int]] = {}
    unreadable: list[Unreadable] = []
    done: set[int] = set()  # socket inodes already applied (forked processes share sockets)
    for pid in cgroups.pids(cgroup):
        try:
            space = netns.netns_id(pid)
            held = live.select(live.connections(pid), states=CONNECTED)
            conns = [c for c in held if c.inode not in done]
            done.update(c.inode for c in conns)
            kept = 0
            if keep_own and conns:
                own = {
                    s.connection.inode
                    for s in live.read(pid, conns)
                    if s.settings is not None and s.settings.enabled
                }
                kept = len(own)
                conns = [c for c in conns if c.inode not in own]
            report = live.apply(pid, conns, policy)
        except ProcessLookupError:
            continue
        except OSError as exc:
            unreadable.append(Unreadable(pid, str(exc.strerror or exc)))
            continue
        row = totals.setdefault(space, [0, 0, 0, 0, 0, 0])
        failed = [c for c in report.changes if c.status == live.Status.FAILED]
        row[0] += len(held)
        row[1] += len(conns) + kept
        row[2] += report.count(live.Status.APPLIED)
        row[3] += kept
        row[4] += len(failed)
        row[5] = failed[-1].errno if failed else row[5]
    reaches = [Reach("processes", _netns_name(space), *row) for space, row in totals.items()]
    return reaches, unreadable


def sweep(
    cgroup: cgroups.Cgroup,
    policy: KeepAlive,
    *,
    keep_own: bool = False,
    method: str = "auto",
    btf_path: Path = VMLINUX,
) -> SweepReport:
    """Apply ``policy`` to the connections ``cgroup`` (and the cgroups below it) already has.

    ``method``: ``auto`` (the iterator where every piece it needs is there, else the processes,
    with the reason), ``iterator`` (its errors raised), ``processes``.
    """
    if method not in METHODS:
        raise ValueError(f"method {method!r}: expected one of {', '.join(METHODS)}")
    record = programs.policy_record(policy, keep_own=keep_own)  # ValueError before anything else
    checks.check_platform()
    reason: str | None = None
    reaches: list[Reach] = []
    unreadable: list[Unreadable] = []
    used = method
    if method in ("auto", "iterator"):
        try:
            layout = iterator_layout(keep_own, btf_path)
            reaches = _iterator_reaches(layout, record, cgroup)
            used = "iterator"
        except GuardError as exc:
            if method == "iterator":
                raise
            reason = str(exc).split("\n", 1)[0]
            used = "processes"
    if used == "processes":
        reaches, unreadable = _process_reaches(cgroup, policy, keep_own)
    listeners, listeners_unreadable = uncovered_listeners(cgroup)
    known = {u.pid for u in unreadable}
    unreadable += [u for u in listeners_unreadable if u.pid not in known]
    return SweepReport(cgroup.path, policy, keep_own, used, reason, reaches, unreadable, listeners)
