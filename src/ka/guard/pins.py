"""Where attachments live: pins in a BPF filesystem, named so a person can list and remove them.

Layout, under the bpffs (``/sys/fs/bpf`` unless told otherwise)::

    ka/<cgroup-id>/link       the BPF link attaching the program to the cgroup (the commit)
    ka/<cgroup-id>/policy     the policy record the program reads
    ka/<cgroup-id>/counters   what the program did (per CPU)

``<cgroup-id>`` is the cgroup directory's inode number (``stat -c %i DIR``). ``rm -r
/sys/fs/bpf/ka/<cgroup-id>`` removes an attachment by hand: the link goes with its last pin.
A directory without ``link`` is what an interrupted ``attach`` leaves (no program attached);
``ka guard detach`` and the next ``attach`` remove it. One ``flock`` on ``ka/`` keeps two ka
processes from changing attachments at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from ..live.cgroup import mount_points
from .errors import NotPermitted, Unsupported

BPFFS = Path("/sys/fs/bpf")
# bpf_preload (CONFIG_BPF_PRELOAD) puts these in every new bpffs: they do not make it in use.
PRELOADED = frozenset({"maps.debug", "progs.debug"})
TOP = "ka"
LINK, POLICY, COUNTERS = "link", "policy", "counters"


class PinDir(NamedTuple):
    """One attachment's directory of pins."""

    directory: Path
    cgroup_id: int

    @property
    def link(self) -> Path:
        return self.directory / LINK

    @property
    def policy(self) -> Path:
        return self.directory / POLICY

    @property
    def counters(self) -> Path:
        return self.directory / COUNTERS

    @property
    def complete(self) -> bool:
        """True when the link is pinned: the attachment is in force."""
        return self.link.exists()


def is_mounted(bpffs: Path) -> bool:
    """True when a BPF filesystem is mounted at ``bpffs``."""
    try:
        return bpffs.resolve() in {p.resolve() for p in mount_points("bpf")}
    except OSError:
        return False


def ensure_mounted(bpffs: Path = BPFFS) -> bool:
    """Mount a BPF filesystem at ``bpffs`` unless one is there; True when this call mounted it.
    ``Unsupported`` when it cannot be (no such directory, no bpffs in the kernel),
    ``NotPermitted`` without CAP_SYS_ADMIN."""
    if is_mounted(bpffs):
        return False
    if not bpffs.is_dir():
        raise Unsupported(
            f"no BPF filesystem is mounted at {bpffs} and it cannot be: {bpffs} is not a directory", "bpffs"
        )
    libc = ctypes.CDLL(None, use_errno=True)
    target = os.fsencode(bpffs)
    if libc.mount(b"bpf", target, b"bpf", ctypes.c_ulong(0), b"mode=0700") != 0:
        err = ctypes.get_errno()
        reason = f"no BPF filesystem is mounted at {bpffs} and mounting one failed: {os.strerror(err)}"
        if err in (errno.EPERM, errno.EACCES):
            raise NotPermitted(reason + " (mounting needs CAP_SYS_ADMIN)", "bpffs-permission", err)
        raise Unsupported(reason, "bpffs", err)
    return True


def unmount_if_empty(bpffs: Path) -> bool:
    """Undo ``ensure_mounted``: unmount ``bpffs`` when nothing but an empty ``ka/`` is pinned
    there; True when it was unmounted."""
    with contextlib.suppress(OSError):
        top(bpffs).rmdir()
    if not is_mounted(bpffs) or set(os.listdir(bpffs)) - PRELOADED:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.umount2(os.fsencode(bpffs), 0) == 0)


def top(bpffs: Path) -> Path:
    return bpffs / TOP


def pin_dir(bpffs: Path, cgroup_id: int) -> PinDir:
    return PinDir(top(bpffs) / str(cgroup_id), cgroup_id)


def pin_dirs(bpffs: Path) -> list[PinDir]:
    """Every attachment directory ka made under ``bpffs``, by cgroup id."""
    found = []
    try:
        names = os.listdir(top(bpffs))
    except FileNotFoundError:
        return []
    except PermissionError as exc:
        raise NotPermitted(f"cannot read {top(bpffs)}: {exc.strerror} (ka guard needs root)", "root") from exc
    for name in names:
        if name.isdigit():
            found.append(pin_dir(bpffs, int(name)))
    return sorted(found, key=lambda d: d.cgroup_id)


def remove(pins: PinDir) -> None:
    """Unpin everything in the directory and remove it (a missing directory is fine)."""
    if pins.directory.exists():
        shutil.rmtree(pins.directory)


@contextlib.contextmanager
def locked(bpffs: Path) -> Iterator[None]:
    """An exclusive lock on ``bpffs/ka`` (made if missing) for one change of attachments."""
    directory = top(bpffs)
    try:
        directory.mkdir(mode=0o755, exist_ok=True)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except PermissionError as exc:
        raise NotPermitted(
            f"cannot write to {directory}: {exc.strerror} (run ka guard as root)", "root"
        ) from exc
    import fcntl  # POSIX only: this module is imported everywhere the ka command runs

    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
