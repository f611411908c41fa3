"""Linux cgroup v2: where it is mounted, which cgroup a process or a systemd unit runs in, and the
processes a cgroup holds.

The v2 hierarchy is found in ``/proc/self/mountinfo`` (filesystem type ``cgroup2``), wherever it
is mounted: ``/sys/fs/cgroup`` on a unified layout, ``/sys/fs/cgroup/unified`` on systemd's hybrid
layout. A process's cgroup is the ``0::PATH`` line of ``/proc/PID/cgroup``, relative to that
mount (the caller's cgroup namespace). A unit's cgroup comes from systemd
(``systemctl show --property=ControlGroup``) where it runs, else from a search of the hierarchy
for a directory of that name (``system.slice/NAME.service``, ``user.slice/.../NAME.service``).

A cgroup's id (``cgroup_id``) is the inode number of its directory, as the kernel's BPF side
knows it; ``subtree`` lists a cgroup and those below it, ``by_id`` finds one by id.

Used by ``ka audit --cgroup/--unit`` and ``ka guard``; the rest of ka does not need cgroups.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from .._options import PLATFORM

__all__ = [
    "MOUNTINFO",
    "Cgroup",
    "CgroupError",
    "by_id",
    "cgroup2_mount",
    "cgroup_id",
    "of_pid",
    "of_unit",
    "pids",
    "resolve",
    "subtree",
    "unit_name",
]

#: Where the cgroup v2 mount is looked up: this process's mount table.
MOUNTINFO = Path("/proc/self/mountinfo")
PROC = Path("/proc")

# systemd.unit(5): unit names are at most 255 characters of ASCII letters, digits, ":-_.\"; a
# name without a suffix is taken as a service, as systemctl does.
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\@-]{1,255}")
_UNIT_SUFFIXES = (".service", ".scope", ".slice", ".socket", ".mount", ".swap", ".target")


class CgroupError(LookupError):
    """No cgroup v2 hierarchy, or no cgroup for the process, unit or path asked about."""


class Cgroup(NamedTuple):
    """A cgroup of the v2 hierarchy: its directory and its path as ``/proc/PID/cgroup`` shows it."""

    directory: Path  # e.g. /sys/fs/cgroup/unified/system.slice/redis.service
    path: str  # e.g. /system.slice/redis.service ("/" for the root)

    def __str__(self) -> str:
        return self.path


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as three octal digits."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_points(fstype: str, mountinfo: Path = MOUNTINFO) -> list[Path]:
    """Where filesystems of type ``fstype`` (``cgroup2``, ``bpf``) are mounted with their root at
    the filesystem's root, in mount order; ``OSError`` if mountinfo cannot be read."""
    found = []
    for line in mountinfo.read_text().splitlines():
        # mountinfo(5): ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if sep and right.split()[:1] == [fstype] and len(fields) >= 5 and fields[3] == "/":
            found.append(Path(_unescape(fields[4])))
    return found


def cgroup2_mount(mountinfo: Path = MOUNTINFO) -> Path:
    """The directory where the cgroup v2 hierarchy is mounted; ``CgroupError`` if it is not."""
    if PLATFORM != "linux":
        raise CgroupError(f"cgroups are a Linux feature; this system is {PLATFORM}")
    try:
        found = mount_points("cgroup2", mountinfo)
    except OSError as exc:
        raise CgroupError(f"cannot read {mountinfo} to find the cgroup v2 mount: {exc.strerror}") from exc
    if found:
        return found[0]
    raise CgroupError(
        "no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified, or boot "
        "with systemd.unified_cgroup_hierarchy=1)"
    )


def resolve(path: str | os.PathLike[str], mount: Path | None = None) -> Cgroup:
    """The cgroup at ``path``: a directory under the v2 mount, or a path relative to its root
    (``/system.slice/x.service`` as ``/proc/PID/cgroup`` shows it). ``CgroupError`` if there is
    no such cgroup, or for an empty path (which would name the root, every process of the host:
    an unset shell variable must not select them all; give ``/`` for the root)."""
    if not os.fspath(path):
        raise CgroupError(
            "an empty cgroup path names no cgroup: give one, or '/' for the root (every process)"
        )
    root = cgroup2_mount() if mount is None else mount
    given = Path(path)
    directory = given if given.is_relative_to(root) else root / str(given).lstrip("/")
    directory = Path(os.path.normpath(directory))
    if not directory.is_relative_to(root):
        raise CgroupError(f"cgroup path {str(path)!r} leaves the cgroup v2 hierarchy at {root}")
    if not (directory / "cgroup.procs").is_file():
        raise CgroupError(f"no cgroup {str(path)!r}: {directory} is not a cgroup v2 directory")
    relative = directory.relative_to(root).as_posix()
    return Cgroup(directory, "/" if relative == "." else "/" + relative)


def of_pid(pid: int, mount: Path | None = None, proc: Path = PROC) -> Cgroup:
    """The cgroup v2 that process ``pid`` runs in. ``ProcessLookupError`` if there is no such
    process, ``CgroupError`` if it has no v2 cgroup (or runs in another cgroup namespace's)."""
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
    except FileNotFoundError:
        raise ProcessLookupError(3, f"no process with pid {pid}") from None
    for line in lines:
        if line.startswith("0::"):
            relative = line[3:]
            if relative.endswith(" (deleted)") or not relative.startswith("/"):
                raise CgroupError(f"process {pid}'s cgroup {relative!r} is not reachable from here")
            return resolve(relative, mount)
    raise CgroupError(f"process {pid} is in no cgroup v2 (its /proc/{pid}/cgroup has no 0:: line)")


# cgroup v1 controllers that tag a socket with its task's cgroup (net/core/netclassid_cgroup.c,
# netprio_cgroup.c): a socket passed to another process is re-tagged with the receiver's. What
# the tag means for traffic: the cgroup's classid, and its priority per interface.
SOCKET_TAG_FILES = {"net_cls": "net_cls.classid", "net_prio": "net_prio.ifpriomap"}


def socket_tagging_cgroups(pid: int | str = "thread-self", proc: Path = PROC) -> dict[str, str]:
    """The cgroup v1 ``net_cls`` and ``net_prio`` cgroups of a process (``thread-self``: the
    calling thread), by controller; a controller absent from ``/proc/PID/cgroup`` (not mounted,
    or the process is gone) counts as the root, where every task is until moved."""
    found = dict.fromkeys(SOCKET_TAG_FILES, "/")
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        _hierarchy, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            if controller in found:
                found[controller] = path
    return found


def _v1_directory(controller: str, path: str, mountinfo: Path) -> Path | None:
    """Where cgroup ``path`` of the v1 hierarchy holding ``controller`` is visible, or None."""
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(tail) < 3 or tail[0] != "cgroup" or len(fields) < 5:
            continue
        if controller not in tail[2].split(","):
            continue
        root, point = _unescape(fields[3]), Path(_unescape(fields[4]))
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return point / path[len(root) :].lstrip("/")
    return None


def socket_tags(
    pid: int | str = "thread-self", proc: Path = PROC, mountinfo: Path = MOUNTINFO
) -> dict[str, str]:
    """What the v1 ``net_cls``/``net_prio`` tags of a process's sockets mean, by controller: the
    cgroup's ``net_cls.classid`` and ``net_prio.ifpriomap`` as the kernel shows them ("" for the
    root cgroup, which tags nothing), or ``cgroup PATH`` where the hierarchy is not visible."""
    tags: dict[str, str] = {}
    for controller, path in socket_tagging_cgroups(pid, proc).items():
        if path == "/":
            tags[controller] = ""
            continue
        directory = _v1_directory(controller, path, mountinfo)
        try:
            if directory is None:
                raise OSError
            value = (directory / SOCKET_TAG_FILES[controller]).read_text().strip()
        except OSError:
            tags[controller] = f"cgroup {path}"
            continue
        # The root's values: classid 0, every interface at priority 0.
        untagged = value == "0" or all(line.endswith(" 0") for line in value.splitlines())
        tags[controller] = "" if untagged else value
    return tags


def unit_name(name: str) -> str:
    """A systemd unit name checked, with ``.service`` added when it has no unit suffix;
    ``ValueError`` naming it if it cannot be a unit name."""
    if not _UNIT_NAME.fullmatch(name) or name.startswith(".") or "/" in name:
        raise ValueError(f"unit {name!r}: expected a systemd unit name such as myapp.service")
    return name if name.endswith(_UNIT_SUFFIXES) else name + ".service"


def _from_systemd(unit: str) -> str | None:
    """The ControlGroup systemd reports for a loaded unit, or None (no systemd, not loaded)."""
    systemctl = shutil.which("systemctl")
    if systemctl is None or not Path("/run/systemd/system").is_dir():
        return None
    try:
        done = subprocess.run(
            [systemctl, "show", "--property=ControlGroup", "--value", unit],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = done.stdout.strip()
    return value if done.returncode == 0 and value.startswith("/") else None


def of_unit(name: str, mount: Path | None = None) -> Cgroup:
    """The cgroup of a systemd unit (``myapp`` means ``myapp.service``). ``CgroupError`` if the
    unit has no cgroup (not running, or not found)."""
    unit = unit_name(name)
    root = cgroup2_mount() if mount is None else mount
    from_systemd = _from_systemd(unit)
    if from_systemd is not None:
        return resolve(from_systemd, root)
    found = sorted(_named(root, unit), key=lambda d: (len(d.parts), str(d)))
    if not found:
        raise CgroupError(f"unit {unit}: no cgroup of that name under {root} (is the unit running?)")
    return resolve(found[0], root)


def _named(root: Path, name: str) -> Iterable[Path]:
    for directory, subdirs, _files in os.walk(root):
        if name in subdirs:
            yield Path(directory) / name
        subdirs[:] = [d for d in subdirs if d != name]


def pids(cgroup: Cgroup, recursive: bool = True) -> list[int]:
    """The processes in the cgroup (and, with ``recursive``, in every cgroup below it), sorted.
    A cgroup removed while it is read contributes nothing."""
    found: set[int] = set()
    walk = os.walk(cgroup.directory) if recursive else [(str(cgroup.directory), [], [])]
    for directory, _subdirs, _files in walk:
        try:
            text = (Path(directory) / "cgroup.procs").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        found.update(int(pid) for pid in text.split())
    return sorted(found)


def cgroup_id(cgroup: Cgroup) -> int:
    """The kernel's id of the cgroup (what BPF helpers and ``bpftool cgroup`` call cgroup id):
    the inode number of its directory on 64-bit kernels."""
    return os.stat(cgroup.directory).st_ino


def subtree(cgroup: Cgroup) -> list[Cgroup]:
    """The cgroup and every cgroup below it, parents first. A cgroup removed while the tree is
    walked is left out."""
    root = cgroup.directory
    # directory is the mount point joined with path: take the path's parts off the end
    mount = root.parents[cgroup.path.count("/") - 1] if cgroup.path != "/" else root
    found = [cgroup]
    for directory, subdirs, _files in os.walk(root):
        subdirs.sort()
        for name in subdirs:
            path = Path(directory) / name
            if (path / "cgroup.procs").is_file():
                found.append(Cgroup(path, "/" + path.relative_to(mount).as_posix()))
    return found


def by_id(identifier: int, mount: Path | None = None) -> Cgroup | None:
    """The cgroup whose id is ``identifier``, or None when none is (removed, or outside this
    cgroup namespace's view)."""
    root = cgroup2_mount() if mount is None else mount
    for directory, _subdirs, _files in os.walk(root):
        try:
            if os.stat(directory).st_ino == identifier:
                return resolve(directory, root)
        except (OSError, CgroupError):
            continue
    return None
