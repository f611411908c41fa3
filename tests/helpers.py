"""Reading socket options straight from the kernel, without ka, to check what ka did."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import pytest

import ka

# The policy most tests apply, and what getsockopt then reads on Linux:
# (SO_KEEPALIVE, idle, interval, count, TCP_USER_TIMEOUT ms).
POLICY = ka.KeepAlive(idle=33, interval=7, count=4, user_timeout=12.345)
EXPECTED = (1, 33, 7, 4, 12345)

TCP_KEEPIDLE = getattr(socket, "TCP_KEEPIDLE", 4)
TCP_KEEPINTVL = getattr(socket, "TCP_KEEPINTVL", 5)
TCP_KEEPCNT = getattr(socket, "TCP_KEEPCNT", 6)
TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)


@contextmanager
def loopback_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected loopback TCP pair, (client, accepted), closed on exit."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    with client, accepted:
        yield client, accepted


def kernel_values(sock: socket.socket) -> tuple[int, int, int, int, int]:
    """(SO_KEEPALIVE, idle, interval, count, user timeout ms) by getsockopt."""
    return (
        1 if sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) else 0,
        sock.getsockopt(socket.IPPROTO_TCP, TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, TCP_KEEPCNT),
        sock.getsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT),
    )


def values_of(target: Any) -> tuple[int, int, int, int, int]:
    """kernel_values() of any socket-like object (TransportSocket, uvloop's PseudoSocket, a
    listener a server holds), read on a duplicate of its descriptor."""
    with socket.socket(fileno=os.dup(target.fileno())) as dup:
        return kernel_values(dup)


def fresh_values() -> tuple[int, int, int, int, int]:
    """What a fresh TCP socket reports here: keepalive off, the sysctl defaults."""
    with socket.socket() as sock:
        return kernel_values(sock)


def ss_established(options: str, port_filter: str) -> list[str]:
    """The lines ``ss <options> state established <port_filter>`` prints, blank ones left out."""
    out = subprocess.run(
        ["ss", options, "state", "established", port_filter], check=True, capture_output=True, text=True
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


def ss_timers(port: int) -> dict[tuple[str, int], str]:
    """``ss -tno`` timer fields of established sockets whose local port is ``port``,
    keyed by (peer address, peer port). Skips the test where ``ss`` is not installed."""
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed: cannot read the kernel's keepalive timers")
    timers = {}
    for line in ss_established("-tnoH", f"( sport = :{port} )"):
        fields = line.split()
        peer = fields[3]
        host, _, peer_port = peer.rpartition(":")
        timer = next((f for f in fields if f.startswith("timer:(")), "")
        timers[(host, int(peer_port))] = timer
    return timers


def core_apply_many(
    core: ModuleType, targets: object, policy: ka.KeepAlive, threads: int = 1, backend: str = "syscalls"
) -> ka.BulkResult:
    """One implementation's apply_many, called directly, as the face's BulkResult."""
    return ka.BulkResult.from_columns(core.apply_many(targets, policy, threads, backend))


def core_read_many(core: ModuleType, targets: object, threads: int = 1) -> ka.ReadResult:
    """One implementation's read_many, called directly, as the face's ReadResult."""
    return ka.ReadResult.from_columns(core.read_many(targets, threads))


# The C shim's headers under test (KA_SHIM_DIR: another checkout's, to see what a fix changed):
# the source tree's, else the installed package's (the wheel ships them), as when the suite runs
# from outside the tree against a wheel.
_TREE_SHIM = os.path.join(os.path.dirname(__file__), "..", "src", "ka")
SHIM_DIR = os.environ.get("KA_SHIM_DIR") or (
    _TREE_SHIM if os.path.exists(os.path.join(_TREE_SHIM, "_platform.h")) else os.path.dirname(ka.__file__)
)


def build_shim_program(source: str, directory: Any, *flags: str) -> str:
    """Compile a C program that includes _platform.h (``-O2 -lpthread`` and ``flags``) in
    ``directory``; returns the binary's path. Skips the test where there is no C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    path = os.path.join(str(directory), "program")
    with open(path + ".c", "w") as f:
        f.write(source)
    command = [cc, "-O2", *flags, "-I", SHIM_DIR, path + ".c", "-o", path, "-lpthread"]
    build = subprocess.run(command, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return path


def terminate(proc: subprocess.Popen[Any], timeout: float = 10, *, group: bool = False) -> None:
    """End a child with SIGTERM (to its process group when ``group``: a server that forks), waiting
    ``timeout`` seconds before SIGKILL; always reaped."""

    def send(number: int) -> None:
        if proc.poll() is None:
            if group:
                os.killpg(proc.pid, number)
            else:
                proc.send_signal(number)

    send(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait()
