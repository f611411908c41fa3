"""What the server glue tests (tests/adapters/test_glue_*.py) share: the policy they serve and the
values it gives, accepted sockets read back by getsockopt on the descriptors this process holds
(found in /proc/self/fd by local port), wrk and plain TCP clients, and small servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest

import ka
import ka.server
from helpers import kernel_values, values_of

POLICY_TEXT = "idle=37 interval=6 count=3"
EXPECTED = (1, 37, 6, 3, 0)  # SO_KEEPALIVE, idle, interval, count, TCP_USER_TIMEOUT ms
CONNECTIONS = 20
EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
MODES = [
    pytest.param(None, "inherit", id="inherit"),
    pytest.param(ka.server.MACOS, "per-accept", id="per-accept"),
]


def accepted_values(port: int) -> list[tuple[int, int, int, int, int]]:
    """Kernel values of every TCP socket this process holds with local port ``port`` and a peer:
    the accepted side of each connection to the server (clients in this process use other ports)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = os.dup(int(name))
        except OSError:
            continue  # closed since the listing
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)  # not a socket
            continue
        with sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
                continue
            try:
                if sock.getsockname()[1] != port:
                    continue
                sock.getpeername()
            except OSError:
                continue  # a listener has no peer
            found.append(kernel_values(sock))
    return found


def check_listener(sock: Any, mode: str) -> None:
    """Inherit: the listener carries the policy. Per-accept: ka never touched it."""
    values = values_of(sock)
    if mode == "inherit":
        assert values == EXPECTED
    else:
        assert values[0] == 0, f"per-accept mode set keepalive on the listener: {values}"


def check_accepted(port: int, count: int = CONNECTIONS, *, reconnects: bool = False) -> None:
    """Exactly ``count`` accepted connections, each carrying the policy. ``reconnects``: at least
    ``count`` (wrk opens a new connection for one the server closed; under load a closing one can
    still be held), each still carrying the policy."""
    values = accepted_values(port)
    found = f"expected {count} accepted connections on port {port}, found {len(values)}"
    assert len(values) >= count if reconnects else len(values) == count, found
    assert set(values) == {EXPECTED}, values


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def needs_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        pytest.skip("wrk is not installed (Debian package wrk): the HTTP servers are driven by it")
    return path


async def wrk_while(port: int, check: Callable[[], None], accepted: Callable[[], int] | None = None) -> None:
    """Run wrk with CONNECTIONS connections against the port; once the server holds them all
    (``accepted()`` counts them; by default the sockets this process holds), run ``check`` while
    wrk still runs, then stop wrk (SIGINT: it prints its summary), which must show requests
    served and no socket errors."""
    wrk = needs_wrk()
    count = accepted or (lambda: len(accepted_values(port)))
    proc = await asyncio.create_subprocess_exec(
        wrk, "-t2", f"-c{CONNECTIONS}", "-d60s", f"http://127.0.0.1:{port}/", stdout=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while await asyncio.to_thread(count) < CONNECTIONS:
            assert time.monotonic() < deadline, "wrk's connections never all arrived"
            await asyncio.sleep(0.05)
        await asyncio.to_thread(check)
        proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    assert proc.returncode == 0 and "requests in" in text, text
    assert "Socket errors" not in text, text


async def hello_handler(request: Any) -> Any:
    from aiohttp import web

    return web.Response(text="hello\n")


@contextlib.asynccontextmanager
async def hello_runner() -> AsyncIterator[Any]:
    """An ``aiohttp.web.AppRunner`` set up for an app answering "hello" on ``/``; cleaned up after."""
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/", hello_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        yield runner
    finally:
        await runner.cleanup()


def tcp_clients_check(port: int, count: int = CONNECTIONS, early: list[socket.socket] | None = None) -> None:
    """``count`` plain TCP clients (``early`` ones already connected, plus new ones), each echoed
    once, then every accepted socket read back."""
    new = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    try:
        for client in [*(early or []), *new]:
            client.sendall(b"x")
            assert client.recv(1) == b"x"
        check_accepted(port, count + len(early or []))
    finally:
        for client in new:
            client.close()


def twisted_echo_factory() -> Any:
    from twisted.internet import protocol

    class Echo(protocol.Protocol):
        def dataReceived(self, data: bytes) -> None:
            cast(Any, self.transport).write(data)

    return protocol.Factory.forProtocol(Echo)


def serve_twisted(
    listen: Callable[[Any], Any], mode: str, clients: Callable[[int], None] | None = None
) -> None:
    """``listen(reactor)`` on a fresh (not installed) reactor, which runs here while plain TCP
    clients drive the port from a thread; the listener and every accepted socket are checked."""
    from twisted.internet.pollreactor import PollReactor

    reactor = PollReactor()  # type: ignore[no-untyped-call]
    port = listen(reactor)
    errors: list[BaseException] = []

    def drive() -> None:
        try:
            check_listener(port.socket, mode)
            (clients or tcp_clients_check)(port.getHost().port)
        except BaseException as exc:
            errors.append(exc)
        finally:
            reactor.callFromThread(reactor.stop)

    reactor.callWhenRunning(threading.Thread(target=drive, daemon=True).start)
    reactor.run(installSignalHandlers=False)
    port.stopListening()
    if errors:
        raise errors[0]
