"""What each piece of ``ka.guard`` needs from the kernel and the caller, checked before anything
is loaded: the platform, the capabilities, the kernel's version.

Version checks stand in for features the kernel cannot be asked about without loading a program:
which options ``bpf_setsockopt`` takes is decided when the program runs, not when it is verified.
Where a feature can be seen (the BTF's types, a verifier's refusal), ``ka.guard`` looks at it
instead.
"""

from __future__ import annotations

import os
import re
import sys
from typing import NamedTuple

from ..live.procfs import CAPABILITY_NAMES, status_value
from .errors import NotPermitted, Unsupported

CAP_NET_ADMIN = CAPABILITY_NAMES.index("net_admin")
CAP_SYS_ADMIN = CAPABILITY_NAMES.index("sys_admin")
CAP_PERFMON = CAPABILITY_NAMES.index("perfmon")
CAP_BPF = CAPABILITY_NAMES.index("bpf")


class Need(NamedTuple):
    """A kernel version a piece needs, and why."""

    version: tuple[int, int]
    why: str


KERNEL_NEEDS = {
    "attach": Need(
        (5, 9),
        "sock_ops programs may set SO_KEEPALIVE, TCP_KEEPIDLE/INTVL/CNT and TCP_USER_TIMEOUT with "
        "bpf_setsockopt since Linux 5.9 (and BPF_LINK_DETACH arrived with it)",
    ),
    "keep_own": Need(
        (6, 1),
        "--keep-own reads SO_KEEPALIVE with bpf_getsockopt, which takes SOL_SOCKET options since Linux 6.1",
    ),
    "iterator": Need(
        (5, 15),
        "the tcp iterator may call bpf_setsockopt, and a socket's cgroup is a plain pointer, "
        "since Linux 5.15",
    ),
}
# Before 5.11 BPF memory counts against RLIMIT_MEMLOCK (the loader raises it); before 5.8 there
# is no CAP_BPF or CAP_PERFMON and CAP_SYS_ADMIN stands for both.
MEMCG_ACCOUNTING = (5, 11)
CAP_BPF_SINCE = (5, 8)


def check_platform() -> None:
    """``Unsupported`` anywhere but Linux."""
    if not sys.platform.startswith("linux"):
        raise Unsupported(f"ka guard uses Linux's BPF; this system is {sys.platform}", "platform")


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """(major, minor) of the running kernel (``uname -r``; ``release`` for tests)."""
    text = os.uname().release if release is None else release
    found = re.match(r"(\d+)\.(\d+)", text)
    if found is None:
        raise Unsupported(f"cannot read a kernel version from {text!r}", "kernel")
    return int(found.group(1)), int(found.group(2))


def require_kernel(piece: str, release: str | None = None) -> None:
    """``Unsupported`` naming the kernel and what is missing when it is older than ``piece`` needs."""
    need = KERNEL_NEEDS[piece]
    have = kernel_version(release)
    if have < need.version:
        text = os.uname().release if release is None else release
        wanted = ".".join(map(str, need.version))
        raise Unsupported(f"kernel {text} is too old: {need.why}; this needs {wanted} or later", "kernel")


def cap_name(cap: int) -> str:
    return "CAP_" + CAPABILITY_NAMES[cap].upper()


def _has(mask: int, cap: int) -> bool:
    return bool(mask >> cap & 1)


def require_capabilities(*, iterator: bool = False, mask: int | None = None) -> None:
    """``NotPermitted`` naming each capability missing: CAP_BPF (or CAP_SYS_ADMIN) and
    CAP_NET_ADMIN to load and attach the sock_ops program; CAP_BPF and CAP_PERFMON (or
    CAP_SYS_ADMIN) for the iterator (``iterator``)."""
    caps = (status_value(None, "CapEff", base=16) or 0) if mask is None else mask
    admin = _has(caps, CAP_SYS_ADMIN)
    new_caps = kernel_version() >= CAP_BPF_SINCE

    def bpf_cap(cap: int) -> tuple[str, bool]:
        # CAP_BPF/CAP_PERFMON, or CAP_SYS_ADMIN for either (the only one before 5.8)
        if not new_caps:
            return "CAP_SYS_ADMIN", admin
        return cap_name(cap), admin or _has(caps, cap)

    needs = [bpf_cap(CAP_BPF)]
    net_admin = cap_name(CAP_NET_ADMIN), admin or _has(caps, CAP_NET_ADMIN)  # CAP_SYS_ADMIN does too
    needs.append(bpf_cap(CAP_PERFMON) if iterator else net_admin)
    missing = list(dict.fromkeys(name for name, ok in needs if not ok))
    if not missing:
        return
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    need = "the tcp iterator needs" if iterator else "loading and attaching the program needs"
    instead = "; CAP_SYS_ADMIN stands for any of them" if new_caps else ""
    raise NotPermitted(
        f"{need} {' and '.join(missing)}: this process ({who}) lacks "
        f"{'it' if len(missing) == 1 else 'them'}{instead}; run ka guard as root with its full capabilities",
        "capabilities" if os.geteuid() == 0 else "root",
    )
