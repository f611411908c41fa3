"""What can stop ``ka.guard``, each naming the missing piece.

``missing`` is a short stable key for scripts (the CLI's JSON carries it):

- ``NotPermitted``: ``root``/``capabilities`` (CAP_BPF or CAP_SYS_ADMIN, and CAP_NET_ADMIN;
  CAP_PERFMON for the sweep's iterator), ``bpffs-permission``;
- ``Unsupported``: ``platform``, ``cgroup2``, ``bpffs``, ``kernel``, ``btf``;
- ``Refused`` (the kernel said no to a program or an attachment): ``verifier``,
  ``exclusive-attachment``;
- ``NotGuarded``: the cgroup has no ka attachment.
"""

from __future__ import annotations


class GuardError(Exception):
    """Something ``ka.guard`` needs is missing or was refused; the message says what and what to do."""

    def __init__(self, message: str, missing: str, errno: int = 0) -> None:
        super().__init__(message)
        self.missing = missing
        self.errno = errno


class NotPermitted(GuardError):
    """Not root, or a capability is missing (the CLI exits 3)."""


class Unsupported(GuardError):
    """The kernel or the system lacks a piece: too old, no cgroup v2, no bpffs, no BTF (exit 4)."""


class Refused(GuardError):
    """The kernel refused the program (``log`` holds the verifier's words) or the attachment (exit 7)."""

    def __init__(self, message: str, missing: str, errno: int = 0, log: str = "") -> None:
        super().__init__(message, missing, errno)
        self.log = log


class NotGuarded(GuardError, LookupError):
    """No ka attachment on that cgroup (exit 1)."""
