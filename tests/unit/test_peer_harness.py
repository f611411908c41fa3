"""The test harness's own traps: a wait for a server's port that a socket connected to itself
satisfied (a TCP simultaneous open on loopback), so a client test ran against a RabbitMQ still
booting and got ECONNREFUSED (test_kombu_amqp, once in CI)."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import pytest

import client_peers


def _connected_to_itself(address: tuple[str, int], timeout: float | None = None, **_: Any) -> socket.socket:
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the last try's TIME_WAIT
        sock.bind(address)  # the destination as the source: the kernel connects the socket to itself
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    assert sock.getsockname() == sock.getpeername()
    return sock


def test_a_socket_connected_to_itself_is_not_a_listening_server(monkeypatch: pytest.MonkeyPatch) -> None:
    port = client_peers.free_port()
    monkeypatch.setattr(socket, "create_connection", _connected_to_itself)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as booting:
        try:
            with pytest.raises(RuntimeError, match=f"did not listen on port {port} within 0.3 s"):
                client_peers.wait_for_port(port, booting, "a booting server", 0.3)
        finally:
            booting.kill()
