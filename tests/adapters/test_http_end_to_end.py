"""ka.http end to end: a real HTTP/1.1 server on loopback, its Keep-Alive and idle timeout."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import ka
from helpers import kernel_values
from ka.http import (
    KeepAliveHeader,
    decide_connection,
    is_persistent,
    parse_connection,
    parse_keep_alive,
)

# -- end to end: a real HTTP/1.1 server on loopback --------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    policy: ka.KeepAlive
    requests_per_connection: int
    kernel: list[tuple[int, int, int, int, int]]
    errors: list[BaseException]

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        if exc is not None:
            self.errors.append(exc)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.idle_timeout = self.timeout  # the HTTP idle timeout, enforced by the socket timeout
        ka.apply(self.connection, self.server.policy)
        self.server.kernel.append(kernel_values(self.connection))
        self.requests_left = self.server.requests_per_connection

    def do_GET(self) -> None:
        self.requests_left -= 1
        assert self.idle_timeout is not None
        decision = decide_connection(
            self.request_version, self.headers, timeout=int(self.idle_timeout), max=self.requests_left
        )
        body = str(self.client_address[1]).encode()
        self.send_response(200)
        for name, value in decision.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = not decision.persistent

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _serving(idle_timeout: int) -> Iterator[_Server]:
    """A ThreadingHTTPServer on loopback that closes connections idle for ``idle_timeout`` s."""
    handler = type("Handler", (_Handler,), {"timeout": idle_timeout})
    server = _Server(("127.0.0.1", 0), handler)
    server.policy = ka.KeepAlive.for_http_idle_timeout(idle_timeout)
    server.requests_per_connection = 2
    server.kernel = []
    server.errors = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert server.errors == []


@pytest.fixture
def http_server() -> Iterator[_Server]:
    with _serving(3) as server:
        yield server


class _RawClient:
    """An HTTP client on a bare socket: bytes in, (status, header pairs, body) out."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=10)
        self.buffer = b""

    def request(self, version: str, *extra: str) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
        lines = [f"GET / {version}", "Host: 127.0.0.1", *extra, "", ""]
        self.sock.sendall("\r\n".join(lines).encode())
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status, *header_lines = head.split(b"\r\n")
        pairs = [(n.strip(), v.strip()) for n, v in (line.split(b":", 1) for line in header_lines)]
        length = int(next(v for n, v in pairs if n.lower() == b"content-length"))
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, pairs, body

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, "the server closed the connection mid-response"
        self.buffer += chunk

    def closed_by_server(self) -> bool:
        return self.buffer == b"" and self.sock.recv(1) == b""

    def close(self) -> None:
        self.sock.close()


def _keep_alive(pairs: list[tuple[bytes, bytes]]) -> KeepAliveHeader:
    return parse_keep_alive([v for n, v in pairs if n.lower() == b"keep-alive"], strict=True)


@pytest.mark.parametrize(("version", "extra"), [("HTTP/1.1", ()), ("HTTP/1.0", ("Connection: keep-alive",))])
def test_end_to_end_keep_alive(http_server: _Server, version: str, extra: tuple[str, ...]) -> None:
    client = _RawClient(http_server.server_address[:2])  # type: ignore[arg-type]
    try:
        port = str(client.sock.getsockname()[1]).encode()

        status, pairs, body = client.request(version, *extra)
        assert status == b"HTTP/1.1 200 OK" and body == port
        assert _keep_alive(pairs) == KeepAliveHeader(timeout=3, max=1)
        assert is_persistent("HTTP/1.1", pairs)

        # The same connection carries the second request: the server saw the same client port.
        status, pairs, body = client.request(version, *extra)
        assert status == b"HTTP/1.1 200 OK" and body == port
        assert _keep_alive(pairs) == KeepAliveHeader()  # max was used up: no Keep-Alive, but close
        assert parse_connection([v for n, v in pairs if n.lower() == b"connection"]) == ("close",)
        assert not is_persistent("HTTP/1.1", pairs)
        assert client.closed_by_server()
    finally:
        client.close()

    # One connection, and the kernel holds the policy derived from the advertised timeout.
    policy = http_server.policy
    assert len(http_server.kernel) == 1
    enabled, idle, interval, count, user_ms = http_server.kernel[0]
    assert (enabled, idle, interval, count) == (1, 3, 1, 3) == (1, policy.idle, policy.interval, policy.count)
    if policy.user_timeout_ms is not None:
        assert user_ms == policy.user_timeout_ms == 6000


def test_end_to_end_http10_without_keep_alive_is_closed(http_server: _Server) -> None:
    client = _RawClient(http_server.server_address[:2])  # type: ignore[arg-type]
    try:
        _, pairs, _ = client.request("HTTP/1.0")
        assert not is_persistent("HTTP/1.0", pairs)
        assert (b"Connection", b"close") in pairs
        assert client.closed_by_server()
    finally:
        client.close()


def test_end_to_end_idle_connection_is_closed_by_the_server() -> None:
    # The advertised timeout is real: an idle persistent connection is closed by the server.
    with _serving(1) as server:
        client = _RawClient(server.server_address[:2])  # type: ignore[arg-type]
        try:
            _, pairs, _ = client.request("HTTP/1.1")
            timeout = _keep_alive(pairs).timeout
            assert timeout == 1 and is_persistent("HTTP/1.1", pairs)
            client.sock.settimeout(timeout + 10)
            assert client.closed_by_server()
        finally:
            client.close()
