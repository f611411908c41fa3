"""ka.server: listeners given a policy once, checked on the kernel's own values."""

from __future__ import annotations

import http.client
import http.server
import socket
import threading
import time
from contextlib import ExitStack
from typing import ClassVar

import pytest

import ka
import ka.server
from helpers import EXPECTED, POLICY, fresh_values, kernel_values, ss_timers
from ka.server import LINUX, MACOS, WINDOWS, Platform

linux_only = pytest.mark.skipif(ka.capabilities().platform != "linux", reason="needs Linux")


@pytest.fixture
def untouched() -> tuple[int, int, int, int, int]:
    """What a fresh TCP socket reports here: keepalive off, the sysctl defaults."""
    return fresh_values()


def _connect(listener: socket.socket, stack: ExitStack) -> socket.socket:
    client = socket.create_connection(listener.getsockname()[:2], timeout=5)
    return stack.enter_context(client)


def _wait_queued(listener: socket.socket, n: int) -> None:
    deadline = time.monotonic() + 5
    while ka.server._queued(listener) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"{n} connections never reached the accept queue")
        time.sleep(0.01)


def _timer_seconds(timer: str) -> int:
    """``timer:(keepalive,32sec,0)`` -> 32 (ss prints ms below one second, minutes above 60)."""
    assert timer.startswith("timer:(keepalive,"), timer
    value = timer.split(",")[1]
    if value.endswith("ms"):
        return 0
    if "min" in value:
        minutes, _, rest = value.partition("min")
        return int(minutes) * 60 + (int(rest.rstrip("sec")) if rest else 0)
    return int(value.rstrip("sec"))


def test_current_platform_is_linux() -> None:
    if ka.capabilities().platform != "linux":
        pytest.skip("these expectations are Linux's")
    assert Platform.current() == LINUX


@linux_only
def test_inherit_sets_the_listener_once_and_accepted_sockets_inherit(listener: socket.socket) -> None:
    plan = ka.server.prepare_listener(listener, POLICY, platform=LINUX)
    assert plan.mode == "inherit" and plan.inherits and plan.pending == 0
    assert kernel_values(listener) == EXPECTED
    marker = object()
    assert plan.accepted(marker) is marker  # type: ignore[type-var]  # no call per accept (applying would raise TypeError)
    with ExitStack() as stack:
        clients = [_connect(listener, stack) for _ in range(3)]
        accepted = [stack.enter_context(listener.accept()[0]) for _ in range(3)]  # plain accept()
        for sock in accepted:
            assert kernel_values(sock) == EXPECTED
        timers = ss_timers(listener.getsockname()[1])
        for client in clients:
            assert 30 <= _timer_seconds(timers[client.getsockname()]) <= 33


@pytest.mark.parametrize("platform", [MACOS, WINDOWS], ids=["macos", "windows"])
def test_per_accept_never_touches_the_listener(
    listener: socket.socket,
    untouched: tuple[int, int, int, int, int],
    platform: Platform,
) -> None:
    before = kernel_values(listener)
    assert before == untouched and before[0] == 0
    plan = ka.server.prepare_listener(listener, POLICY, platform=platform)
    assert plan.mode == "per-accept" and not plan.inherits
    listener.settimeout(5)
    with ExitStack() as stack:
        for _ in range(4):
            _connect(listener, stack)
        for _ in range(3):
            conn, _ = plan.accept()
            stack.enter_context(conn)
            assert kernel_values(conn) == EXPECTED
        raw = stack.enter_context(listener.accept()[0])
        assert kernel_values(raw) == untouched  # nothing to inherit: the listener carries nothing
        assert kernel_values(listener) == before


@linux_only
def test_connections_queued_before_the_policy_get_it_at_accept(listener: socket.socket) -> None:
    listener.settimeout(5)
    with ExitStack() as stack:
        _connect(listener, stack)
        _wait_queued(listener, 1)
        plan = ka.server.prepare_listener(listener, POLICY)
        assert plan.pending == 1
        _connect(listener, stack)
        for _ in range(2):
            conn, _ = plan.accept()
            assert kernel_values(stack.enter_context(conn)) == EXPECTED
        assert plan.pending == 0


@linux_only
def test_kernel_copies_listener_options_when_a_connection_is_created(
    listener: socket.socket, untouched: tuple[int, int, int, int, int]
) -> None:
    """Why plans count the queue: a connection queued before the listener got the policy lacks it."""
    listener.settimeout(5)
    with ExitStack() as stack:
        _connect(listener, stack)
        _wait_queued(listener, 1)
        ka.apply(listener, POLICY)
        _connect(listener, stack)
        first = stack.enter_context(listener.accept()[0])
        second = stack.enter_context(listener.accept()[0])
        assert kernel_values(first) == untouched
        assert kernel_values(second) == EXPECTED


@pytest.mark.parametrize("platform", [None, MACOS], ids=["native", "macos"])
def test_create_server(platform: Platform | None, untouched: tuple[int, int, int, int, int]) -> None:
    with ka.server.create_server(("127.0.0.1", 0), POLICY, backlog=16, platform=platform) as server:
        assert isinstance(server, socket.socket)
        assert server.mode == ("per-accept" if platform is MACOS else Platform.current().mode)
        assert server.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert kernel_values(server) == (untouched if platform is MACOS else EXPECTED)
        server.settimeout(5)
        with ExitStack() as stack:
            for _ in range(3):
                _connect(server, stack)
            for _ in range(3):
                conn, address = server.accept()
                assert type(conn) is socket.socket and address[0] == "127.0.0.1"
                assert kernel_values(stack.enter_context(conn)) == EXPECTED
        if platform is MACOS:
            assert kernel_values(server) == untouched


@pytest.mark.skipif(not socket.has_ipv6, reason="this Python has no IPv6")
def test_create_server_ipv6_loopback() -> None:
    try:
        server = ka.server.create_server(("::1", 0), POLICY, family=socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with server, ExitStack() as stack:
        assert server.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        server.settimeout(5)
        _connect(server, stack)
        conn, _ = server.accept()
        assert kernel_values(stack.enter_context(conn)) == EXPECTED


def test_bad_input_is_refused_before_any_system_call(
    listener: socket.socket, untouched: tuple[int, int, int, int, int]
) -> None:
    with pytest.raises(TypeError, match=r"policy must be a ka\.KeepAlive, not dict"):
        ka.server.prepare_listener(listener, {"idle": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"platform must be a ka\.server\.Platform or None, not str 'darwin'"):
        ka.server.prepare_listener(listener, POLICY, platform="darwin")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="listener must be a socket or an object with fileno"):
        ka.server.prepare_listener("0.0.0.0:80", POLICY)
    closed = socket.socket()
    closed.close()
    with pytest.raises(ValueError, match=r"listener.fileno\(\) returned -1"):
        ka.server.prepare_listener(closed, POLICY)
    with pytest.raises(ValueError, match=r"dualstack_ipv6=True needs family=socket\.AF_INET6"):
        ka.server.create_server(("127.0.0.1", 0), POLICY, dualstack_ipv6=True)
    with pytest.raises(TypeError, match=r"Platform\.listener_safe must be True or False, not int 1"):
        Platform("x", True, 1)  # type: ignore[arg-type]
    assert kernel_values(listener) == untouched


def test_create_server_reports_the_address_it_could_not_bind() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = taken.getsockname()
        with pytest.raises(OSError, match=r"while attempting to bind on address \('127.0.0.1', \d+\)"):
            ka.server.create_server(address, POLICY)


class _Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[int, int, int, int, int]]] = []

    def do_GET(self) -> None:
        self.seen.append(kernel_values(self.connection))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> type[_Recorder]:
    class Handler(_Recorder):
        seen: ClassVar[list[tuple[int, int, int, int, int]]] = []

    return Handler


@pytest.mark.parametrize("platform", [None, MACOS], ids=["native", "macos"])
def test_socketserver_mixin(
    platform: Platform | None, recorder: type[_Recorder], untouched: tuple[int, int, int, int, int]
) -> None:
    class Server(ka.server.KeepAliveServerMixin, http.server.ThreadingHTTPServer):
        daemon_threads = True
        keepalive = POLICY
        keepalive_platform = platform

    with Server(("127.0.0.1", 0), recorder) as server:
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            assert server.keepalive_plan is not None
            assert server.keepalive_plan.mode == ("per-accept" if platform is MACOS else "inherit")
            host, port = server.server_address[:2]
            for _ in range(3):
                conn = http.client.HTTPConnection(str(host), int(port), timeout=5)
                conn.request("GET", "/")
                assert conn.getresponse().read() == b"ok"
                conn.close()
        finally:
            server.shutdown()
            thread.join()
        assert recorder.seen == [EXPECTED] * 3
        if platform is MACOS:
            assert kernel_values(server.socket) == untouched
