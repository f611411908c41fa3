"""Attaching the sock_ops program to a cgroup, reading what is attached, detaching it.

The order of ``attach`` is what keeps a failure or an interruption from leaving half an
attachment: the maps and the program exist only as descriptors of this process until the link
is pinned, and the link is made and pinned last, with SIGINT and SIGTERM held back across the
two calls. Before the pin, every way out (an error, Ctrl-C) closes the descriptors, which
detaches and frees everything, and removes the pins made so far. After it, the attachment
stands on its own. A SIGKILL between the maps' pins and the link's leaves a directory without a
link (no program attached), which ``list`` shows as incomplete and the next ``attach`` or
``detach`` removes; killed before the rename into place, a ``new-<cgroup-id>-<pid>`` staging
directory, which the next ``attach`` or ``detach`` on that cgroup removes too.

Attaching to a cgroup that has ka's program already replaces the program in its link at once
(``BPF_LINK_UPDATE``) with one that reads the new policy and keeps the counters: no moment
without a program, no connection seeing half of each policy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._signals import signals_deferred
from ..live import cgroup as cgroups
from ..policy import KeepAlive
from . import checks, loader, pins, programs, syscall
from .errors import GuardError, NotGuarded, NotPermitted, Refused
from .loader import Fd
from .pins import BPFFS, PinDir
from .programs import COUNTERS, POLICY, Counters, PolicyRecord
from .syscall import AttachType, BpfError, MapType, ProgType

KEY0 = b"\0\0\0\0"
PROGRAM_NAME = "ka_guard"
POLICY_MAP, COUNTERS_MAP = "ka_policy", "ka_counters"
POSSIBLE_CPUS = Path("/sys/devices/system/cpu/possible")

ATTACHED, CGROUP_GONE, INCOMPLETE = "attached", "cgroup removed", "incomplete"


@dataclasses.dataclass(frozen=True)
class Attachment:
    """One ka attachment, as read from its pins.

    ``state``: ``attached``; ``cgroup removed`` (the kernel detached the program with the
    cgroup; ``detach`` removes the pins); ``incomplete`` (an interrupted attach's pins, no
    program). ``cgroup`` is the cgroup's path as ``/proc/PID/cgroup`` shows it, None once it is
    gone. ``mounted_bpffs`` and ``updated`` describe the ``attach`` call that returned it: it
    mounted the bpffs, or it replaced the policy of an existing attachment.
    """

    cgroup_id: int
    cgroup: str | None
    pins: Path
    state: str
    policy: KeepAlive | None
    keep_own: bool
    counters: Counters
    link_id: int = 0
    prog_id: int = 0
    mounted_bpffs: bool = False
    updated: bool = False
    notes: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cgroup": self.cgroup,
            "cgroup_id": self.cgroup_id,
            "state": self.state,
            "policy": None if self.policy is None else str(self.policy),
            "policy_values": None if self.policy is None else self.policy.as_dict(),
            "keep_own": self.keep_own,
            "counters": self.counters.as_dict(),
            "pins": str(self.pins),
            "link_id": self.link_id,
            "prog_id": self.prog_id,
        }


def possible_cpus(path: Path = POSSIBLE_CPUS) -> int:
    """How many CPUs the kernel may bring up (the per-CPU maps' value count): ``0-3,8-11`` -> 8."""
    total = 0
    for part in path.read_text().strip().split(","):
        low, _, high = part.partition("-")
        total += int(high or low) - int(low) + 1
    return total


@contextlib.contextmanager
def _pinned(path: Path, what: str) -> Iterator[Fd]:
    try:
        fd = syscall.obj_get(str(path))
    except BpfError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            raise NotPermitted(
                f"cannot open {path}: {exc.strerror} (ka guard needs root)", "root", exc.errno
            ) from exc
        raise
    with Fd(fd, what) as owned:
        yield owned


def _read_record(pins_dir: PinDir) -> PolicyRecord:
    with _pinned(pins_dir.policy, "policy map") as policy_map:
        info = syscall.map_info(policy_map.fd)
        if info.name != POLICY_MAP or info.value_size != POLICY.size:
            raise Refused(f"{pins_dir.policy} is not a ka policy map (map {info.name!r})", "not-ka")
        try:
            return PolicyRecord.unpack(syscall.map_lookup(policy_map.fd, KEY0, POLICY.size))
        except ValueError as exc:
            raise Refused(
                f"{pins_dir.policy}: {exc}; detach it with this ka's version first", "not-ka"
            ) from exc


def _read_counters(path: Path) -> Counters:
    with _pinned(path, "counters map") as counters_map:
        values = syscall.map_lookup(counters_map.fd, KEY0, COUNTERS.size * possible_cpus())
    return Counters.from_values(values)


def read(pins_dir: PinDir) -> Attachment:
    """The attachment whose pins are in ``pins_dir``."""
    record: PolicyRecord | None = None
    counters = Counters()
    if pins_dir.policy.exists():
        record = _read_record(pins_dir)
    if pins_dir.counters.exists():
        counters = _read_counters(pins_dir.counters)
    policy = None if record is None else record.policy()
    keep_own = record is not None and record.keep_own
    if not pins_dir.complete:
        return Attachment(
            pins_dir.cgroup_id, None, pins_dir.directory, INCOMPLETE, policy, keep_own, counters
        )
    with _pinned(pins_dir.link, "link") as link:
        info = syscall.link_info(link.fd)
    found = cgroups.by_id(pins_dir.cgroup_id) if info.cgroup_id else None
    state = ATTACHED if info.cgroup_id else CGROUP_GONE
    path = None if found is None else found.path
    return Attachment(
        pins_dir.cgroup_id, path, pins_dir.directory, state, policy, keep_own, counters, info.id, info.prog_id
    )


def attachments(bpffs: Path = BPFFS) -> list[Attachment]:
    """Every ka attachment pinned under ``bpffs`` (none when no bpffs is mounted there)."""
    checks.check_platform()
    if not pins.is_mounted(bpffs):
        return []
    try:
        return [read(d) for d in pins.pin_dirs(bpffs)]
    except PermissionError as exc:
        raise NotPermitted(
            f"cannot read the pins under {bpffs}: {exc.strerror} (ka guard needs root)", "root"
        ) from exc


def find(cgroup_id: int, bpffs: Path = BPFFS) -> Attachment | None:
    """The attachment on the cgroup with this id, or None."""
    if not pins.is_mounted(bpffs):
        return None
    where = pins.pin_dir(bpffs, cgroup_id)
    return read(where) if where.directory.exists() else None


def _exclusive_holder(cgroup: cgroups.Cgroup) -> str | None:
    """Why the kernel forbids attaching here, when an exclusive sock_ops attachment is the reason:
    the cgroup itself, or the nearest ancestor with a program, holds one attached without
    BPF_F_ALLOW_MULTI (kernel/bpf/cgroup.c, ``hierarchy_allows_attach``)."""
    directory = cgroup.directory
    mount = cgroups.cgroup2_mount()
    first = True
    while True:
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return None
        try:
            query = syscall.prog_query(fd, AttachType.CGROUP_SOCK_OPS)
        except BpfError:
            return None
        finally:
            os.close(fd)
        flags = query.attach_flags
        where = cgroups.resolve(directory, mount).path
        if query.prog_ids and not flags & syscall.BPF_F_ALLOW_MULTI:
            override = flags & syscall.BPF_F_ALLOW_OVERRIDE
            if first or not override:
                kind = "BPF_F_ALLOW_OVERRIDE only" if override else "no flags: exclusive"
                whose = "the cgroup itself" if first else f"its ancestor {where}"
                return (
                    f"{whose} has sock_ops program id {query.prog_ids[0]} attached with {kind}, "
                    "which forbids other sock_ops programs "
                    + ("there" if first else "below it")
                    + " (bpftool cgroup show shows it; whoever attached it must use BPF_F_ALLOW_MULTI)"
                )
            return None
        if query.prog_ids or directory == mount:
            return None
        directory, first = directory.parent, False


def _load_sock_ops(policy_map: Fd, counters_map: Fd) -> Fd:
    return loader.load(
        programs.sock_ops_program(),
        ProgType.SOCK_OPS,
        PROGRAM_NAME,
        {"policy": policy_map, "counters": counters_map},
        expected_attach_type=AttachType.CGROUP_SOCK_OPS,
    )


def _policy_map(record: PolicyRecord) -> Fd:
    policy_map = loader.create_map(MapType.ARRAY, 4, POLICY.size, 1, POLICY_MAP)
    try:
        syscall.map_update(policy_map.fd, KEY0, record.pack())
    except BaseException:
        policy_map.close()
        raise
    return policy_map


def _link_failed(exc: BpfError, cgroup: cgroups.Cgroup) -> GuardError:
    if exc.errno == errno.EPERM:
        holder = _exclusive_holder(cgroup)
        if holder is not None:
            return Refused(
                f"the kernel refused to attach to cgroup {cgroup.path} (EPERM): {holder}",
                "exclusive-attachment",
                errno.EPERM,
            )
        return NotPermitted(
            f"the kernel refused to attach to cgroup {cgroup.path} (EPERM): ka guard needs root with "
            "CAP_BPF and CAP_NET_ADMIN",
            "capabilities",
            errno.EPERM,
        )
    return Refused(
        f"the kernel refused to attach to cgroup {cgroup.path}: {exc.strerror}", "attach", exc.errno or 0
    )


def _remove_staging(where: PinDir) -> None:
    """Remove the staging directories of attaches to this cgroup that never finished (killed
    before the rename into place): under the lock no attach is running, so every one is left over."""
    for leftover in where.directory.parent.glob(f"new-{where.cgroup_id}-*"):
        pins.remove(PinDir(leftover, where.cgroup_id))


def _attach_new(record: PolicyRecord, cgroup: cgroups.Cgroup, where: PinDir) -> None:
    staging = where.directory.with_name(
        f"new-{where.cgroup_id}-{os.getpid()}"
    )  # bpffs refuses names with dots
    committed = False
    with contextlib.ExitStack() as stack:
        policy_map = stack.enter_context(_policy_map(record))
        counters_map = stack.enter_context(
            loader.create_map(MapType.PERCPU_ARRAY, 4, COUNTERS.size, 1, COUNTERS_MAP)
        )
        program = stack.enter_context(_load_sock_ops(policy_map, counters_map))
        cgroup_fd = os.open(cgroup.directory, os.O_RDONLY | os.O_DIRECTORY)
        stack.callback(os.close, cgroup_fd)
        try:
            staging.mkdir(mode=0o700)
            syscall.obj_pin(policy_map.fd, str(staging / pins.POLICY))
            syscall.obj_pin(counters_map.fd, str(staging / pins.COUNTERS))
            staging.rename(where.directory)
            with signals_deferred():
                try:
                    link = Fd(syscall.link_create(program.fd, cgroup_fd, AttachType.CGROUP_SOCK_OPS), "link")
                except BpfError as exc:
                    raise _link_failed(exc, cgroup) from exc
                with link:
                    syscall.obj_pin(link.fd, str(where.link))
                    committed = True
        finally:
            if not committed:
                for leftover in (staging, where.directory):
                    pins.remove(PinDir(leftover, where.cgroup_id))


def _replace(record: PolicyRecord, where: PinDir) -> None:
    """A new program reading a new policy map, swapped into the pinned link in one call; the
    counters carry on; the new policy map's pin replaces the old one."""
    staging = where.directory / f"policy-new-{os.getpid()}"
    with contextlib.ExitStack() as stack:
        link = stack.enter_context(_pinned(where.link, "link"))
        counters_map = stack.enter_context(_pinned(where.counters, "counters map"))
        policy_map = stack.enter_context(_policy_map(record))
        program = stack.enter_context(_load_sock_ops(policy_map, counters_map))
        syscall.obj_pin(policy_map.fd, str(staging))
        try:
            with signals_deferred():
                syscall.link_update(link.fd, program.fd)
                staging.rename(where.policy)
        finally:
            if staging.exists():
                staging.unlink()


def attach(
    policy: KeepAlive, cgroup: cgroups.Cgroup, *, keep_own: bool = False, bpffs: Path = BPFFS
) -> Attachment:
    """Attach the policy to every TCP connection established in ``cgroup`` (and below it) from now
    on, until ``detach``; see the module's docstring for the order of the steps."""
    record = programs.policy_record(policy, keep_own=keep_own)  # ValueError before anything else
    checks.check_platform()
    checks.require_kernel("attach")
    if keep_own:
        checks.require_kernel("keep_own")
    checks.require_capabilities()
    cgroup_id = cgroups.cgroup_id(cgroup)
    mounted = pins.ensure_mounted(bpffs)
    try:
        with pins.locked(bpffs):
            where = pins.pin_dir(bpffs, cgroup_id)
            _remove_staging(where)
            updated = where.complete
            if updated:
                _read_record(where)  # refuses another layout before replacing anything
                _replace(record, where)
            else:
                pins.remove(where)  # an interrupted attach's pins
                _attach_new(record, cgroup, where)
            found = read(where)
    except BaseException:
        if mounted:
            pins.unmount_if_empty(bpffs)
        raise
    notes = [f"mounted a BPF filesystem at {bpffs} (it was not mounted)"] if mounted else []
    return dataclasses.replace(found, cgroup=cgroup.path, mounted_bpffs=mounted, updated=updated, notes=notes)


def detach(cgroup_id: int, bpffs: Path = BPFFS) -> Attachment:
    """Detach ka's program from the cgroup with this id and remove its pins; the attachment as it
    was just before (its final counters). ``NotGuarded`` when there is none."""
    checks.check_platform()
    checks.require_capabilities()
    if not pins.is_mounted(bpffs):
        raise NotGuarded(f"nothing is attached: no BPF filesystem is mounted at {bpffs}", "attachment")
    with pins.locked(bpffs):
        where = pins.pin_dir(bpffs, cgroup_id)
        _remove_staging(where)
        if not where.directory.exists():
            raise NotGuarded(
                f"ka has no attachment on cgroup id {cgroup_id} (pins {where.directory})", "attachment"
            )
        final = read(where)
        if where.complete:
            with _pinned(where.link, "link") as link, contextlib.suppress(BpfError):
                syscall.link_detach(link.fd)  # at once, even if another process holds the link
        pins.remove(where)
    return final
