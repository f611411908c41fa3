"""Loading: maps made, programs loaded (the verifier's log kept on a refusal), descriptors owned.

Every descriptor the kernel hands back is held by an ``Fd`` that closes it exactly once; the
programs, maps and links ka makes disappear when their last descriptor closes, unless they are
pinned or attached through a pinned link. So a failure or an interruption before the pin that
commits an attachment leaves nothing behind: the ``with`` blocks close what was made.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Mapping
from types import TracebackType

from . import syscall
from .asm import Program
from .checks import MEMCG_ACCOUNTING, kernel_version
from .errors import NotPermitted, Refused
from .syscall import BpfError

LOG_SIZE = 1 << 20  # the verifier's log on a refusal: 1 MiB holds every line for ka's programs


class Fd:
    """One descriptor of a BPF object (map, program, link, iterator), closed once."""

    def __init__(self, fd: int, what: str) -> None:
        self.fd: int = fd  # -1 once closed
        self.what: str = what

    def fileno(self) -> int:
        if self.fd < 0:
            raise ValueError(f"the descriptor of {self.what} is closed")
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self) -> Fd:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Fd({self.fd}, {self.what!r})"


def not_permitted(exc: BpfError, what: str) -> NotPermitted:
    """The kernel's EPERM on a load or a map, as the error that names the capabilities."""
    return NotPermitted(
        f"the kernel refused to {what} ({exc.strerror}): ka guard needs root, with CAP_BPF and "
        "CAP_NET_ADMIN (CAP_PERFMON too for the sweep's iterator), and no lockdown or LSM forbidding BPF",
        "capabilities",
        exc.errno,
    )


def _memlock_for_old_kernels() -> None:
    """Before 5.11 maps and programs are charged to RLIMIT_MEMLOCK (often 64 KiB): raise it to
    unlimited, or without CAP_SYS_RESOURCE as far as the hard limit; a map or load that still
    lacks room gets EPERM from the kernel."""
    if kernel_version() < MEMCG_ACCOUNTING:
        import resource  # POSIX only: this module is imported everywhere the ka command runs

        hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
        for limit in (resource.RLIM_INFINITY, hard):
            try:
                resource.setrlimit(resource.RLIMIT_MEMLOCK, (limit, limit))
                return
            except (ValueError, OSError):  # ValueError: not allowed to raise the hard limit
                continue


def create_map(map_type: syscall.MapType, key_size: int, value_size: int, max_entries: int, name: str) -> Fd:
    """A new map, owned."""
    _memlock_for_old_kernels()
    try:
        fd = syscall.map_create(map_type, key_size, value_size, max_entries, name)
    except BpfError as exc:
        if exc.errno == errno.EPERM:
            raise not_permitted(exc, f"create the map {name}") from exc
        raise
    return Fd(fd, f"map {name}")


def load(
    program: Program,
    prog_type: syscall.ProgType,
    name: str,
    maps: Mapping[str, Fd],
    *,
    expected_attach_type: syscall.AttachType,
    attach_btf_id: int = 0,
) -> Fd:
    """The program loaded with its maps' descriptors, owned, for the attach point it will be
    attached to. A refusal is ``Refused`` with the kernel's errno and the verifier's log (the load
    is repeated once with the log on: the first try skips its cost); EPERM is ``NotPermitted``."""
    code = program.encode({map_name: fd.fileno() for map_name, fd in maps.items()})
    _memlock_for_old_kernels()

    def attempt(log: ctypes.Array[ctypes.c_char] | None) -> Fd:
        fd = syscall.prog_load(
            prog_type,
            code,
            name,
            expected_attach_type=expected_attach_type,
            attach_btf_id=attach_btf_id,
            log=log,
        )
        return Fd(fd, f"program {name}")

    try:
        return attempt(None)
    except BpfError as exc:
        if exc.errno == errno.EPERM:
            raise not_permitted(exc, f"load the {name} program") from exc
        refusal = exc
    log = ctypes.create_string_buffer(LOG_SIZE)
    try:
        return attempt(log)
    except BpfError as exc:
        text = log.value.decode("latin-1").strip()  # the kernel writes ASCII; latin-1 decodes any byte
        # A log that does not fit makes the kernel answer ENOSPC, not its verdict, and keep only
        # part of the log (its end since 6.4): the verdict is the first try's errno.
        cut = exc.errno == errno.ENOSPC and refusal.errno != errno.ENOSPC
        heading = "verifier log" + (
            f" (longer than {LOG_SIZE} bytes: the kernel kept part of it)" if cut else ""
        )
        raise Refused(
            f"the kernel refused the {name} program ({len(program)} instructions): {refusal.strerror}"
            + (f"\n{heading}:\n{text}" if text else " (the verifier wrote no log)"),
            "verifier",
            refusal.errno,
            log=text,
        ) from exc
