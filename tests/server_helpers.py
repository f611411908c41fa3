"""Real servers as real processes, real clients (wrk), and the policy read back from the server's
own accepted sockets with ``ka show --pid --json``, process by process.

Every accepted connection is counted: the server side's established sockets on the port (all
processes of the server's tree) must equal the client side's (``ss``, by destination port).
Options are read, not timers: a connection with data in flight runs a retransmit timer.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from helpers import ss_established

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
BIN = Path(sys.executable).parent
WRK_CONNECTIONS = 32


SERVER_LIBRARIES = ("gunicorn", "uvicorn", "uvicorn_worker", "hypercorn")


def missing(reason: str) -> None:
    """Skip, or fail where the servers must run (``KA_REQUIRE_SERVERS=1``, set by .ci/run)."""
    if os.environ.get("KA_REQUIRE_SERVERS"):
        pytest.fail(reason)
    pytest.skip(reason)


def require_servers() -> None:
    """The servers of the ``peers`` dependency group, importable in this Python."""
    import importlib.util

    absent = [name for name in SERVER_LIBRARIES if importlib.util.find_spec(name) is None]
    if absent:
        missing(
            f"{', '.join(absent)} not installed: pip install -e '.[test]' --group peers "
            "(CI sets KA_REQUIRE_SERVERS=1)"
        )


def require_linux_tools() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("reads a server's sockets with ka show (Linux)")
    for tool in ("wrk", "ss"):
        if shutil.which(tool) is None:
            missing(f"{tool} is not installed (Debian package {'iproute2' if tool == 'ss' else tool})")


def server_tool(name: str) -> str:
    """The console script of a server installed from the ``peers`` dependency group."""
    require_servers()
    path = BIN / name
    if not path.exists():
        missing(f"{name} is not installed in {BIN}: install the peers dependency group")
    return str(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KA_POLICY", None)
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.update(extra)
    return env


@contextmanager
def running(
    argv: Sequence[str], env: Mapping[str, str], log: Path, port: int, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` as a child (its own process group) until the body ends; waits for HTTP on ``port``.

    The log (stdout and stderr) is shown when the server fails to come up."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv), env=dict(env), stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
        )
    try:
        wait_http(proc, port, log)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (it started it), then SIGKILL if it hangs."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # Workers left behind by a master that died first.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def http_get(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def wait_http(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode} before serving:\n{log.read_text()}")
        try:
            if http_get(port).startswith(b"HTTP/1.1 200"):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the server did not answer on port {port} within {timeout} s:\n{log.read_text()}")
        time.sleep(0.1)


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant, from /proc/PID/task/*/children."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    return found


def wait_processes(pid: int, count: int, timeout: float = 10.0) -> list[int]:
    """The process tree of ``pid`` once it has at least ``count`` processes (workers start one by
    one; multiprocessing adds its resource tracker)."""
    deadline = time.monotonic() + timeout
    while len(tree := process_tree(pid)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(tree) >= count, f"expected {count} processes under {pid}, found {tree}"
    return tree


class Accepted(NamedTuple):
    pid: int
    fd: int
    peer_port: int
    enabled: bool
    idle: int | None
    interval: int | None
    probes: int | None
    user_timeout: float | None


def ka_show(pid: int, state: str) -> list[dict[str, Any]]:
    """``ka show --pid PID --json --state STATE``: the process's connections ([] once it ended)."""
    out = subprocess.run(
        [sys.executable, "-m", "ka", "show", "--pid", str(pid), "--json", "--state", state],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if out.returncode != 0:
        if not Path(f"/proc/{pid}").exists():
            return []  # a process that ended meanwhile (a reloader's helper)
        pytest.fail(f"ka show --pid {pid} failed ({out.returncode}): {out.stderr}")
    return [conn for process in json.loads(out.stdout)["processes"] for conn in process["connections"]]


def accepted_connections(pids: Sequence[int], port: int) -> tuple[list[Accepted], int]:
    """The established sockets on local ``port`` held by ``pids``, as ``ka show --pid --json`` reads
    them, and how many closed between the listing and the read."""
    found, vanished = [], 0
    for pid in pids:
        for conn in ka_show(pid, "established"):
            if conn["local"]["port"] != port:
                continue
            k = conn["keepalive"]
            if k is None and "was closed" in (conn["error"] or ""):
                vanished += 1
                continue
            assert k is not None, f"ka show could not read {conn}: {conn['error']}"
            found.append(
                Accepted(
                    pid,
                    conn["fd"],
                    conn["remote"]["port"],
                    k["enabled"],
                    k["idle"],
                    k["interval"],
                    k["count"],
                    k["user_timeout"],
                )
            )
    return found, vanished


def client_ports(port: int) -> set[int]:
    """Local ports of the established client connections to ``port`` (``ss``, by destination port)."""
    return {
        int(line.split()[2].rpartition(":")[2]) for line in ss_established("-tnH", f"( dport = :{port} )")
    }


class LoadResult(NamedTuple):
    accepted: list[Accepted]  # one consistent snapshot: every connection wrk held
    client_ports: set[int]
    requests: int
    wrk_output: str
    every_read: list[Accepted]  # every socket read, snapshots that raced with a reconnect included


_WRK_REQUESTS = re.compile(r"(\d+) requests in")


def read_back_under_load(
    server_pid: int, port: int, *, host: str = "127.0.0.1", connections: int = WRK_CONNECTIONS
) -> LoadResult:
    """wrk with ``connections`` keep-alive connections; while it runs, every accepted socket of the
    server's process tree read back; then wrk is stopped (SIGINT: it prints its summary). Fails
    on wrk errors or non-2xx answers."""
    url_host = f"[{host}]" if ":" in host else host
    wrk = subprocess.Popen(
        ["wrk", "-t2", f"-c{connections}", "-d30s", f"http://{url_host}:{port}/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 2.5
        while len(client_ports(port)) < connections and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
        every: list[Accepted] = []
        # A snapshot that races with a connection closing and reopening is taken again.
        for _ in range(5):
            clients = client_ports(port)
            accepted, vanished = accepted_connections(process_tree(server_pid), port)
            every += accepted
            if not vanished and sorted(a.peer_port for a in accepted) == sorted(clients) == sorted(
                client_ports(port)
            ):
                break
        wrk.send_signal(signal.SIGINT)
        output, _ = wrk.communicate(timeout=30)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    match = _WRK_REQUESTS.search(output)
    assert match is not None and wrk.returncode == 0, f"wrk failed:\n{output}"
    assert "Non-2xx" not in output and "Socket errors" not in output, f"wrk saw errors:\n{output}"
    return LoadResult(accepted, clients, int(match.group(1)), output, every)


def assert_every_connection_has(result: LoadResult, policy: Any, connections: int = WRK_CONNECTIONS) -> None:
    """Every accepted connection (as many as wrk holds, matched by port) carries ``policy``."""
    assert result.requests > 0, result.wrk_output
    peers = [a.peer_port for a in result.accepted]
    assert len(result.client_ports) == connections, f"wrk held {len(result.client_ports)} connections"
    assert sorted(peers) == sorted(result.client_ports), (
        f"server side {len(peers)} accepted sockets, client side {len(result.client_ports)}"
    )
    want = (True, policy.idle, policy.interval, policy.count)
    wrong = [a for a in result.every_read if (a.enabled, a.idle, a.interval, a.probes) != want]
    assert not wrong, f"{len(wrong)} of {len(result.every_read)} accepted sockets lack {policy}: {wrong[:3]}"
    if policy.user_timeout is not None:
        assert all(a.user_timeout == policy.user_timeout for a in result.every_read)
