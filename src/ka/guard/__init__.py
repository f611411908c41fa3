"""A keepalive policy for every TCP connection of a cgroup (a systemd service, a container),
including programs ka cannot change: a BPF sock_ops program attached to the cgroup sets the
policy when each connection is established, outgoing or accepted, IPv4 or IPv6 (Linux 5.9+,
root). ``sweep`` gives it to the connections that already exist.

    >>> import ka.guard                                                 # doctest: +SKIP
    >>> ka.guard.attach("within=30s", unit="myapp.service")             # doctest: +SKIP
    >>> ka.guard.attachments()                                          # doctest: +SKIP
    >>> ka.guard.sweep(unit="myapp.service")                            # doctest: +SKIP
    >>> ka.guard.detach(unit="myapp.service")                           # doctest: +SKIP

The rooms: ``syscall`` (bpf(2) through ctypes), ``loader`` (maps, programs, the verifier's
log), ``asm`` (the assembler), ``btf`` (the kernel's types, for the sweep), ``programs`` (the
two programs and the records they share with ka), ``pins`` (bpffs), ``attachment`` (attach,
list, detach), ``sweeper`` (the sweep), ``coverage`` (listeners no program covers), ``checks`` (kernels and
capabilities), ``errors``. No compiler, libbpf or bcc: the programs are assembled in Python.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..live import cgroup as cgroups
from ..policy import KeepAlive, resolve_policy
from . import attachment as _attachment
from . import sweeper as _sweeper
from .attachment import ATTACHED, CGROUP_GONE, INCOMPLETE, Attachment
from .coverage import Listener, Unreadable, uncovered_listeners
from .errors import GuardError, NotGuarded, NotPermitted, Refused, Unsupported
from .pins import BPFFS
from .programs import Counters
from .sweeper import METHODS, Reach, SweepReport

__all__ = [
    "ATTACHED",
    "BPFFS",
    "CGROUP_GONE",
    "INCOMPLETE",
    "METHODS",
    "Attachment",
    "Counters",
    "GuardError",
    "Listener",
    "NotGuarded",
    "NotPermitted",
    "Reach",
    "Refused",
    "SweepReport",
    "Unreadable",
    "Unsupported",
    "attach",
    "attachments",
    "detach",
    "status",
    "sweep",
    "target",
    "uncovered_listeners",
]


def target(
    cgroup: str | os.PathLike[str] | None = None, *, unit: str | None = None, pid: int | None = None
) -> cgroups.Cgroup:
    """The cgroup v2 named by exactly one of: a path (a directory under the v2 mount, or relative to
    its root), a systemd unit, a process. ``ValueError`` unless exactly one is given, and for a
    process in the root cgroup (every process of the host is there: name the root as ``"/"``
    if that is meant); ``Unsupported`` without a cgroup v2 hierarchy,
    ``ka.live.cgroup.CgroupError`` when there is no such cgroup."""
    given = [name for name, value in (("cgroup", cgroup), ("unit", unit), ("pid", pid)) if value is not None]
    if len(given) != 1:
        raise ValueError(f"name the cgroup by exactly one of cgroup=, unit= or pid= (got {given or 'none'})")
    try:
        cgroups.cgroup2_mount()
    except cgroups.CgroupError as exc:
        raise Unsupported(f"ka guard attaches to a cgroup v2: {exc}", "cgroup2") from exc
    if cgroup is not None:
        return cgroups.resolve(cgroup)
    if unit is not None:
        return cgroups.of_unit(unit)
    assert pid is not None
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise ValueError(f"pid={pid!r} is not a process id: expected a positive number")
    found = cgroups.of_pid(pid)
    if found.path == "/":
        raise ValueError(
            f"process {pid} runs in the root cgroup, where every process of the host is: its cgroup "
            "would be every connection of the host; give --cgroup / (cgroup='/') to mean that"
        )
    return found


def attach(
    policy: KeepAlive | str | None = None,
    cgroup: str | os.PathLike[str] | None = None,
    *,
    unit: str | None = None,
    pid: int | None = None,
    keep_own: bool = False,
    bpffs: Path = BPFFS,
) -> Attachment:
    """Guard the cgroup: every TCP connection established in it (and in the cgroups below it)
    from now on gets ``policy`` (a ``KeepAlive``, a policy string, or None for ``KA_POLICY``),
    until ``detach``. Attaching again replaces the policy in place.

    ``keep_own``: leave a connection alone when it already has SO_KEEPALIVE on (Linux 6.1+).
    ``bpffs``: where the attachment is pinned (mounted there when it is not).
    Raises ``ValueError`` for a bad policy or target, before anything is loaded, and a
    ``GuardError`` naming what is missing: ``NotPermitted``, ``Unsupported``, ``Refused``.
    """
    resolved = resolve_policy(policy)
    return _attachment.attach(resolved, target(cgroup, unit=unit, pid=pid), keep_own=keep_own, bpffs=bpffs)


def attachments(bpffs: Path = BPFFS) -> list[Attachment]:
    """Every ka attachment: where, with which policy, and its counters."""
    return _attachment.attachments(bpffs)


def status(
    cgroup: str | os.PathLike[str] | None = None,
    *,
    unit: str | None = None,
    pid: int | None = None,
    bpffs: Path = BPFFS,
) -> Attachment | None:
    """The attachment on that cgroup, or None."""
    return _attachment.find(cgroups.cgroup_id(target(cgroup, unit=unit, pid=pid)), bpffs)


def detach(
    cgroup: str | os.PathLike[str] | None = None,
    *,
    unit: str | None = None,
    pid: int | None = None,
    cgroup_id: int | None = None,
    bpffs: Path = BPFFS,
) -> Attachment:
    """Remove ka's program from the cgroup (by path, unit, process, or ``cgroup_id`` for one whose
    cgroup is gone); connections established from then on are left alone. Returns the attachment
    with its final counters; ``NotGuarded`` when there was none."""
    if cgroup_id is None:
        cgroup_id = cgroups.cgroup_id(target(cgroup, unit=unit, pid=pid))
    elif cgroup is not None or unit is not None or pid is not None:
        raise ValueError("name the cgroup by cgroup_id= or by cgroup=, unit= or pid=, not both")
    return _attachment.detach(cgroup_id, bpffs)


def sweep(
    policy: KeepAlive | str | None = None,
    cgroup: str | os.PathLike[str] | None = None,
    *,
    unit: str | None = None,
    pid: int | None = None,
    keep_own: bool | None = None,
    method: str = "auto",
    bpffs: Path = BPFFS,
) -> SweepReport:
    """Give the cgroup's existing connections the policy: ``policy`` if given, else the policy
    attached to the cgroup (``keep_own`` too, unless given). See ``ka.guard.sweeper``
    for the two methods."""
    where = target(cgroup, unit=unit, pid=pid)
    if policy is None:
        found = _attachment.find(cgroups.cgroup_id(where), bpffs)
        if found is None or found.policy is None:
            raise ValueError(
                f"give a policy: cgroup {where.path} has no ka attachment to take the policy from"
            )
        resolved = found.policy
        keep_own = found.keep_own if keep_own is None else keep_own
    else:
        resolved = resolve_policy(policy)
    return _sweeper.sweep(where, resolved, keep_own=bool(keep_own), method=method)
