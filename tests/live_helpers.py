"""Looking at another process's sockets without ka: /proc, pidfd_getfd by hand, ss, a test server.

The live tests check what ``ka apply`` did through these, so a bug in ka.live cannot hide itself.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from helpers import kernel_values
from ka.bench.pool import stop_child
from ka.cli import EXIT_OK
from ka.live import cgroup
from ka.live.cgroup import Cgroup

SERVER = Path(__file__).with_name("echo_server.py")
SYS_PIDFD_GETFD = 438
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _why_nobody_cannot_run_ka() -> str | None:
    """None when this Python can import ka as user nobody; else the reason (e.g. a pyenv Python
    whose shared library is not readable by other users)."""
    if os.geteuid() != 0:
        return "needs root to run a process as another user"
    if shutil.which("setpriv") is None:
        return "needs setpriv (util-linux)"
    probe = subprocess.run(
        [*NOBODY, sys.executable, "-c", "import ka"], capture_output=True, text=True, timeout=60, check=False
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return f"user nobody cannot run {sys.executable} with ka: {last}"
    return None


_NOBODY_PROBLEM = _why_nobody_cannot_run_ka() if sys.platform.startswith("linux") else "Linux only"
as_nobody = pytest.mark.skipif(_NOBODY_PROBLEM is not None, reason=_NOBODY_PROBLEM or "")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def getfd(pidfd: int, fd: int) -> int:
    """pidfd_getfd(2) straight through libc's syscall()."""
    new = int(
        _libc.syscall(ctypes.c_long(SYS_PIDFD_GETFD), ctypes.c_int(pidfd), ctypes.c_int(fd), ctypes.c_uint(0))
    )
    if new < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return new


class Seen(NamedTuple):
    """One TCP socket of another process, as its duplicate shows it."""

    fd: int
    local: tuple[str, int]
    peer: tuple[str, int] | None  # None for a listener
    values: tuple[int, int, int, int, int]  # SO_KEEPALIVE, idle, interval, count, user timeout ms


def sockets_of(pid: int) -> list[Seen]:
    """Every TCP socket process ``pid`` holds, read through our own pidfd_getfd duplicates."""
    seen = []
    pidfd = os.pidfd_open(pid)
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                    continue
                dup = getfd(pidfd, int(name))
            except OSError:
                continue  # closed meanwhile
            with socket.socket(fileno=dup) as sock:
                if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                try:
                    peer: tuple[str, int] | None = sock.getpeername()[:2]
                except OSError:
                    peer = None
                seen.append(Seen(int(name), sock.getsockname()[:2], peer, kernel_values(sock)))
    finally:
        os.close(pidfd)
    return seen


_TIMER = re.compile(r"timer:\((\w+),(?:(\d+)min)?(?:(\d+)sec)?(?:(\d+)ms)?,(\d+)\)")


def timer_seconds(field: str) -> tuple[str, float]:
    """``timer:(keepalive,39sec,0)`` -> ("keepalive", 39.0); ("", 0.0) for no timer."""
    match = _TIMER.match(field)
    if match is None:
        return "", 0.0
    minutes, secs, ms = (int(g) if g else 0 for g in match.group(2, 3, 4))
    return match.group(1), minutes * 60 + secs + ms / 1000


class EchoServer(NamedTuple):
    proc: subprocess.Popen[str]
    ports: list[int]  # IPv4 port, then the IPv6 one where there is IPv6
    clients: list[socket.socket]  # our ends of its connections

    @property
    def pid(self) -> int:
        return self.proc.pid


def round_trip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


@contextmanager
def echo_server(n4: int, n6: int, user: Sequence[str] = ()) -> Iterator[EchoServer]:
    """The echo server in a child (optionally run through ``user``, e.g. setpriv), with ``n4``
    IPv4 and ``n6`` IPv6 connections whose far ends are here, each checked by one round trip."""
    proc = subprocess.Popen(
        [*user, sys.executable, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    clients: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        ports = [int(p) for p in proc.stdout.readline().split()]
        if len(ports) < 2:
            n6 = 0
        for i in range(n4 + n6):
            host = "127.0.0.1" if i < n4 else "::1"
            sock = socket.create_connection((host, ports[0 if i < n4 else 1]), timeout=5)
            clients.append(sock)
            assert round_trip(sock, b"hello %d" % i) == b"hello %d" % i
        yield EchoServer(proc, ports, clients)
    finally:
        for sock in clients:
            sock.close()
        stop_child(proc, timeout=5)


def ka_command(
    *args: str, user: Sequence[str] = (), env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m ka ARGS`` in a child process (optionally through ``user``)."""
    return subprocess.run(
        [*user, sys.executable, "-m", "ka", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def wait_for_timers(
    ports: Sequence[int], want: str, count: int, timeout: float = 3.0
) -> dict[tuple[str, int], str]:
    """``ss -tno`` timers of the established sockets on ``ports``, once ``count`` of them show
    ``want`` (a just-echoed socket briefly runs its retransmission timer until the ACK)."""
    from helpers import ss_timers

    deadline = time.monotonic() + timeout
    while True:
        timers: dict[tuple[str, int], str] = {}
        for port in ports:
            timers.update(ss_timers(port))
        if (
            sum(1 for t in timers.values() if timer_seconds(t)[0] == want) >= count
            or time.monotonic() > deadline
        ):
            return timers
        time.sleep(0.05)


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="ka show/apply/defaults --set are Linux only"
)
root_only = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root (another user, dropped capabilities, namespaces)"
)
KEEPALIVE_FILES = [Path("/proc/sys/net/ipv4") / f"tcp_keepalive_{n}" for n in ("time", "intvl", "probes")]


def apply_to_remote(pid: int, policy: str, remote_port: int | str) -> None:
    """``ka apply --pid PID --policy POLICY --remote-port PORT``, which must succeed."""
    done = ka_command("apply", "--pid", str(pid), "--policy", policy, "--remote-port", str(remote_port))
    assert done.returncode == EXIT_OK, done.stderr


@contextmanager
def made_cgroup(unit: str) -> Iterator[Cgroup]:
    """``ka-test-PID.slice/UNIT-PID.service`` under the cgroup v2 mount, made for one test and
    always removed, its processes moved back to the root cgroup first (the caller stops them).
    Skips without a cgroup v2 hierarchy or without root."""
    try:
        root = cgroup.cgroup2_mount()
    except cgroup.CgroupError as exc:
        pytest.skip(str(exc))
    if os.geteuid() != 0:
        pytest.skip("making a cgroup needs root (CI runs the suite as root)")
    top = root / f"ka-test-{os.getpid()}.slice"
    service = top / f"{unit}-{os.getpid()}.service"
    service.mkdir(parents=True)
    try:
        yield cgroup.resolve(service)
    finally:
        for directory in (service, top):
            for pid in (directory / "cgroup.procs").read_text().split():
                with suppress(ProcessLookupError):  # exited meanwhile
                    (root / "cgroup.procs").write_text(pid)
            directory.rmdir()


def run_json(*args: str, expect: int = EXIT_OK, user: Sequence[str] = ()) -> Any:
    """``ka ARGS --json``: its output, parsed, after checking the exit status."""
    out = ka_command(*args, "--json", user=user)
    assert out.returncode == expect, out.stderr + out.stdout
    return json.loads(out.stdout)
