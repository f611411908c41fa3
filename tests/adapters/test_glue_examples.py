"""The documented server examples (docs/examples) run as processes, read back by
``ka show --pid PID --json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from glue_helpers import (
    CONNECTIONS,
    EXAMPLES,
    EXPECTED,
    POLICY_TEXT,
    needs_wrk,
    wait_for,
    wrk_while,
)
from helpers import terminate

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads Linux option numbers and /proc/self/fd"
)


# -- the documented examples, run as processes ----------------------------------------------


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def ka_show(pid: int, port: int, state: str) -> list[dict[str, Any]]:
    """``ka show --pid PID --json`` for one local port: the server process's own sockets."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ka",
            "show",
            "--pid",
            str(pid),
            "--json",
            "--local-port",
            str(port),
            "--state",
            state,
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    if out.returncode == 3:
        pytest.skip(f"ka show may not reach the server process: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert not data["skipped"], data["skipped"]
    return [conn for process in data["processes"] for conn in process["connections"]]


def show_values(conn: dict[str, Any]) -> tuple[int, int, int, int, int]:
    keepalive = conn["keepalive"]
    return (
        int(keepalive["enabled"]),
        keepalive["idle"],
        keepalive["interval"],
        keepalive["count"],
        round(keepalive["user_timeout"] * 1000),
    )


@pytest.fixture
def example() -> Iterator[Callable[[str], tuple[int, int]]]:
    """Starts ``docs/examples/NAME`` with KA_POLICY set; returns (pid, port) once it listens."""
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> tuple[int, int]:
        # server_<library>.py needs that library in this environment (the peers dependency group)
        pytest.importorskip(name.removeprefix("server_").removesuffix(".py"))
        port = free_port()
        env = dict(os.environ, KA_POLICY=POLICY_TEXT)
        proc = subprocess.Popen([sys.executable, str(EXAMPLES / name), str(port)], env=env)
        started.append(proc)
        wait_for(
            lambda: proc.poll() is not None or bool(ka_show(proc.pid, port, "listen")),
            f"{name} to listen on port {port}",
        )
        assert proc.poll() is None, f"{name} exited with {proc.returncode}"
        return proc.pid, port

    yield start
    for proc in started:
        terminate(proc)


def check_shown(pid: int, port: int, peers: set[int] | None = None) -> None:
    """Every established connection of the server process on ``port`` carries the policy; with
    ``peers``, they are exactly the connections from those client ports."""
    conns = ka_show(pid, port, "established")
    if peers is not None:
        assert {conn["remote"]["port"] for conn in conns} == peers
    assert len(conns) == CONNECTIONS, conns
    assert {show_values(conn) for conn in conns} == {EXPECTED}, conns


@pytest.mark.parametrize("name", ["server_aiohttp.py", "server_tornado.py"])
def test_example_http_with_wrk(example: Callable[[str], tuple[int, int]], name: str) -> None:
    needs_wrk()
    pid, port = example(name)
    asyncio.run(
        wrk_while(
            port,
            lambda: check_shown(pid, port),
            accepted=lambda: len(ka_show(pid, port, "established")),
        )
    )


def test_example_websockets(example: Callable[[str], tuple[int, int]]) -> None:
    pytest.importorskip("websockets")
    from websockets.sync.client import connect

    pid, port = example("server_websockets.py")
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(f"ws://127.0.0.1:{port}")) for _ in range(CONNECTIONS)]
        for client in clients:
            client.send("ping")
            assert client.recv(timeout=10) == "ping"
        check_shown(pid, port, {client.socket.getsockname()[1] for client in clients})


@pytest.mark.parametrize("name", ["server_twisted.py", "server_trio.py", "server_anyio.py"])
def test_example_tcp_echo(example: Callable[[str], tuple[int, int]], name: str) -> None:
    pid, port = example(name)
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]
    try:
        for client in clients:
            client.sendall(b"x")
            assert client.recv(1) == b"x"
        check_shown(pid, port, {client.getsockname()[1] for client in clients})
    finally:
        for client in clients:
            client.close()
