"""What a descriptor looks like from outside, to prove ka changed nothing but keepalive on it."""

from __future__ import annotations

import fcntl
import os
import socket
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def fdinfo_flags(fd: int, pid: int | str = "self") -> int:
    """The ``flags:`` field of /proc/PID/fdinfo/FD (octal: status flags and O_CLOEXEC)."""
    for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8)
    raise AssertionError(f"/proc/{pid}/fdinfo/{fd} has no flags line")


def fd_state(fd: int) -> tuple[int, int, int, int, int]:
    """(F_GETFL, F_GETFD, fdinfo flags, inode, file type): any change means ka altered or
    replaced the descriptor; OSError (EBADF) means it was closed."""
    st = os.fstat(fd)
    return (
        fcntl.fcntl(fd, fcntl.F_GETFL),
        fcntl.fcntl(fd, fcntl.F_GETFD),
        fdinfo_flags(fd),
        st.st_ino,
        stat.S_IFMT(st.st_mode),
    )


def open_fds() -> set[int]:
    """The descriptors open in this process now."""
    return {int(name) for name in os.listdir("/proc/self/fd")}


@contextmanager
def default_timeout(seconds: float | None) -> Iterator[None]:
    """socket.setdefaulttimeout for the duration, restored after."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def run_python(code: str, *, twin: bool, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` in a fresh interpreter (so a crash fails the test instead of pytest), with
    the compiled core or the twin; a negative returncode is the signal that killed it."""
    env = dict(os.environ)
    env.pop("KA_NO_EXTENSIONS", None)
    if twin:
        env["KA_NO_EXTENSIONS"] = "1"
    else:
        env["KA_REQUIRE_EXTENSIONS"] = "1"
    return subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
