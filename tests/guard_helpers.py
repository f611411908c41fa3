"""The ka guard tests' pieces: why they cannot run here, a private BPF filesystem, a cgroup made
for the test and always removed (its processes stopped first), processes started inside it, and
reads that do not go through ka.guard (ss, bpftool's view by BPF_PROG_QUERY, ka show).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import ka
import ka.guard
from live_helpers import ka_command, timer_seconds

PEER = Path(__file__).with_name("guard_peer.py")
_serial = iter(range(1_000_000))


@functools.cache
def unavailable() -> str | None:
    """Why the guard cannot be tried here, or None (asked once per run: it makes and removes a
    cgroup and mounts and unmounts a BPF filesystem, as the tests will)."""
    if not sys.platform.startswith("linux"):
        return "ka guard is Linux only"
    if os.geteuid() != 0:
        return "ka guard needs root (CI runs the suite as root)"
    from ka.guard import checks
    from ka.live.cgroup import CgroupError, cgroup2_mount

    try:
        probe = cgroup2_mount() / f"ka-guard-probe-{os.getpid()}"
        probe.mkdir()
        probe.rmdir()
    except (CgroupError, OSError) as exc:
        return f"cannot make a cgroup v2 here: {exc}"
    try:
        checks.require_kernel("attach")
    except Exception as exc:
        return str(exc)
    try:
        with private_bpffs():
            pass
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"cannot mount a BPF filesystem here: {exc}"
    return None


@contextlib.contextmanager
def private_bpffs() -> Iterator[Path]:
    """A BPF filesystem of the test's own (each bpffs mount is a new instance), unmounted and
    removed afterwards: the tests never touch /sys/fs/bpf."""
    directory = Path(tempfile.mkdtemp(prefix=f"ka-bpffs-{os.getpid()}-"))
    try:
        subprocess.run(["mount", "-t", "bpf", "bpf", str(directory)], check=True, capture_output=True)
        try:
            yield directory
        finally:
            subprocess.run(["umount", str(directory)], check=False, capture_output=True)
    finally:
        directory.rmdir()


class MadeCgroup:
    """A cgroup v2 made by the test, named with its pid; processes started in it are stopped and
    the cgroup (and any below it) removed on ``close``."""

    def __init__(self, label: str, parent: Path | None = None) -> None:
        from ka.live import cgroup

        root = cgroup.cgroup2_mount() if parent is None else parent
        self.directory = root / f"ka-guard-{os.getpid()}-{next(_serial)}-{label}"
        self.directory.mkdir()
        self.cgroup = cgroup.resolve(self.directory)
        self.procs: list[subprocess.Popen[str]] = []

    @property
    def path(self) -> str:
        return self.cgroup.path

    def child(self, label: str) -> MadeCgroup:
        return MadeCgroup(label, self.directory)

    def _joining(self) -> list[str]:
        """A shell that joins the cgroup and execs its arguments."""
        return ["sh", "-c", f'echo $$ > {self.directory}/cgroup.procs && exec "$@"', "sh"]

    def start(self, argv: Sequence[str], *, stdin: bool = True) -> subprocess.Popen[str]:
        """``argv`` started inside the cgroup (a shell joins it, then execs the program)."""
        wrapped = [*self._joining(), *argv]
        proc = subprocess.Popen(
            wrapped,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def peer(
        self, port4: int, port6: int, *flags: str, netns: str | None = None
    ) -> tuple[subprocess.Popen[str], dict[str, Any]]:
        """guard_peer.py (it joins the cgroup itself) and its first JSON line; ``netns``: run in
        that network namespace (joined to the cgroup first: ``ip netns exec`` hides /sys's cgroups)."""
        argv = [
            sys.executable,
            str(PEER),
            str(self.directory / "cgroup.procs"),
            str(port4),
            str(port6),
            *flags,
        ]
        if netns is not None:
            argv = [*self._joining(), "ip", "netns", "exec", netns, *argv[:2], "-", *argv[3:]]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else "guard_peer.py printed nothing"
        return proc, json.loads(line)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        for directory in sorted(self.directory.glob("**/"), key=lambda d: -len(d.parts)):
            with contextlib.suppress(FileNotFoundError):
                for _ in range(50):
                    try:
                        directory.rmdir()
                        break
                    except OSError:
                        time.sleep(0.05)  # a killed process leaves its cgroup a moment later


def connected_to(port: int, family: int = socket.AF_INET) -> socket.socket:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    return socket.create_connection((host, port))


def listener(family: int = socket.AF_INET) -> socket.socket:
    if family == socket.AF_INET:
        return socket.create_server(("127.0.0.1", 0))
    return socket.create_server(("::1", 0), family=socket.AF_INET6)


def shown(pid: int) -> list[dict[str, Any]]:
    """The established TCP connections of ``pid`` as ``ka show --pid PID --json`` reads them."""
    out = ka_command("show", "--pid", str(pid), "--state", "established", "--json")
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout)["processes"][0]["connections"])


def values(connection: dict[str, Any]) -> tuple[Any, ...]:
    """``ka show``'s keepalive of one connection as (enabled, idle, interval, count, user timeout ms)."""
    k = connection["keepalive"]
    return (int(k["enabled"]), k["idle"], k["interval"], k["count"], round(k["user_timeout"] * 1000))


_INODE = re.compile(r"\bino:(\d+)")


def ss_timers_by_inode() -> dict[int, str]:
    """``ss -tnoe`` timer field of every established TCP socket, by socket inode."""
    out = subprocess.run(["ss", "-tnoeH", "state", "established"], check=True, capture_output=True, text=True)
    timers = {}
    for line in out.stdout.splitlines():
        found = _INODE.search(line)
        if found:
            timer = next((f for f in line.split() if f.startswith("timer:(")), "")
            timers[int(found.group(1))] = timer
    return timers


def keepalive_timers_now() -> dict[int, tuple[str, float]]:
    """Every established TCP socket's timer now, by inode: (name, seconds left)."""
    return {i: timer_seconds(t) for i, t in ss_timers_by_inode().items()}


def keepalive_timers(inodes: Sequence[int], idle: int, timeout: float = 3.0) -> dict[int, tuple[str, float]]:
    """The timers of these sockets, once each runs keepalive within ``idle`` seconds (or when
    ``timeout`` passes: a socket that just sent data runs its retransmission timer until the ACK)."""
    deadline = time.monotonic() + timeout
    while True:
        timers = {i: timer_seconds(t) for i, t in ss_timers_by_inode().items() if i in set(inodes)}
        good = [i for i, (name, left) in timers.items() if name == "keepalive" and 0 < left <= idle]
        if len(good) == len(inodes) or time.monotonic() > deadline:
            return timers
        time.sleep(0.05)


def attached_programs(directory: Path) -> list[int]:
    """The sock_ops programs attached to a cgroup, asked of the kernel (BPF_PROG_QUERY)."""
    from ka.guard import syscall

    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return syscall.prog_query(fd, syscall.AttachType.CGROUP_SOCK_OPS).prog_ids
    finally:
        os.close(fd)


def guard(*args: str, expect: int = 0, prefix: Sequence[str] = ()) -> Any:
    """``ka guard ARGS --json`` in a child process: its JSON, after checking the exit status."""
    out = ka_command("guard", *args, "--json", user=prefix)
    assert out.returncode == expect, f"exit {out.returncode}: {out.stderr}{out.stdout}"
    return json.loads(out.stdout)


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


class Servers:
    """IPv4 and IPv6 listeners of the test process (outside every test cgroup) that accept and
    hold every connection, sending nothing."""

    def __init__(self) -> None:
        self.listeners = [listener(socket.AF_INET), listener(socket.AF_INET6)]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve, args=(s,), daemon=True) for s in self.listeners]
        for thread in self._threads:
            thread.start()

    @property
    def ports(self) -> tuple[int, int]:
        return self.listeners[0].getsockname()[1], self.listeners[1].getsockname()[1]

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(0.1)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                self.accepted.append(sock.accept()[0])

    def wait(self, n: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.accepted) < n:
            assert time.monotonic() < deadline, f"{len(self.accepted)} of {n} connections arrived"
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        for sock in self.listeners + self.accepted:
            sock.close()


@contextlib.contextmanager
def made_cgroup(label: str) -> Iterator[MadeCgroup]:
    cgroup = MadeCgroup(label)
    try:
        yield cgroup
    finally:
        cgroup.close()


@contextlib.contextmanager
def guarded_cgroup(
    label: str, bpffs: Path, policy: str, *extra: str
) -> Iterator[tuple[MadeCgroup, dict[str, Any]]]:
    """A cgroup with the test policy attached (through the ka command); detached and removed after."""
    with made_cgroup(label) as cgroup:
        attached = guard("attach", policy, "--cgroup", cgroup.path, "--bpffs", str(bpffs), *extra)
        try:
            yield cgroup, attached
        finally:
            with contextlib.suppress(ka.guard.GuardError):
                ka.guard.detach(cgroup.path, bpffs=bpffs)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def connect_when_listening(port: int, timeout: float = 10.0) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connected_to(port)
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, f"nothing listens on port {port}"
            time.sleep(0.05)


def inode_of(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def more_pairs(peer: subprocess.Popen[str], n: int) -> list[int]:
    """``n`` new connections inside guard_peer.py (client and server ends); their client ports."""
    assert peer.stdin is not None and peer.stdout is not None
    peer.stdin.write(f"pairs {n}\n")
    peer.stdin.flush()
    return list(json.loads(peer.stdout.readline()))
