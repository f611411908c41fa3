"""ka.integrations server glue: a failed call per accept is reported, and the connection proceeds."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import sys
from typing import Any

import pytest

import ka
import ka.server
from glue_helpers import (
    POLICY_TEXT,
    hello_runner,
    serve_twisted,
    twisted_echo_factory,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads Linux option numbers and /proc/self/fd"
)


# -- a failed call per accept is reported, and the connection proceeds -----------------------


@pytest.fixture
def failing_apply(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Makes the per-accept step fail with EINVAL (as macOS does on a socket already reset);
    returns the descriptors it was called with."""
    import ka.integrations.serving

    calls: list[int] = []

    def fail(sock: Any, policy: ka.KeepAlive) -> None:
        calls.append(sock.fileno())
        raise OSError(errno.EINVAL, "simulated failure")

    monkeypatch.setattr(ka.integrations.serving, "apply", fail)
    return calls


def echo_once(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(b"x")
        assert client.recv(1) == b"x"


def test_failure_websockets(failing_apply: list[int]) -> None:
    pytest.importorskip("websockets")
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import ServerConnection

    import ka.integrations.websockets as kws

    async def echo(ws: ServerConnection) -> None:
        await ws.send(await ws.recv())

    async def main() -> list[dict[str, Any]]:
        reported: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: reported.append(context))
        server = await kws.serve(echo, "127.0.0.1", 0, policy=POLICY_TEXT, platform=ka.server.MACOS)
        async with server, connect(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}") as client:
            await client.send("ping")
            assert await client.recv() == "ping"
        return reported

    reported = asyncio.run(main())
    assert len(failing_apply) == 1
    assert [context["exception"].errno for context in reported] == [errno.EINVAL]
    assert "could not apply" in reported[0]["message"]


def test_failure_aiohttp_site(failing_apply: list[int]) -> None:
    pytest.importorskip("aiohttp")

    import ka.integrations.aiohttp as kah

    async def main() -> list[dict[str, Any]]:
        reported: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: reported.append(context))
        async with hello_runner() as runner:
            site = kah.KeepAliveSite(runner, "127.0.0.1", 0, policy=POLICY_TEXT, platform=ka.server.MACOS)
            await site.start()
            port = site.plan.listener.getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert (await reader.read()).endswith(b"hello\n")
            writer.close()
        return reported

    reported = asyncio.run(main())
    assert len(failing_apply) == 1
    assert [context["exception"].errno for context in reported] == [errno.EINVAL]


def test_failure_tornado(failing_apply: list[int], caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("tornado")
    import tornado.iostream
    import tornado.tcpserver

    import ka.integrations.tornado as kt

    class Echo(kt.KeepAliveMixin, tornado.tcpserver.TCPServer):
        keepalive = POLICY_TEXT
        keepalive_platform = ka.server.MACOS

        async def handle_stream(self, stream: tornado.iostream.IOStream, address: Any) -> None:
            await stream.write(await stream.read_bytes(1))
            stream.close()

    async def main() -> None:
        server = Echo()
        server.listen(0, "127.0.0.1")
        try:
            await asyncio.to_thread(echo_once, server.keepalive_plans[0].listener.getsockname()[1])
        finally:
            server.stop()

    with caplog.at_level("ERROR", logger="tornado.application"):
        asyncio.run(main())
    assert len(failing_apply) == 1
    assert any("could not apply" in record.getMessage() for record in caplog.records)


def test_failure_twisted(failing_apply: list[int]) -> None:
    pytest.importorskip("twisted")
    from twisted.logger import globalLogPublisher

    import ka.integrations.twisted as ktw

    events: list[dict[str, Any]] = []
    observer: Any = events.append  # an ILogObserver: called with each event dict
    globalLogPublisher.addObserver(observer)
    try:

        def listen(reactor: Any) -> Any:
            return ktw.listen_tcp(
                0,
                twisted_echo_factory(),
                interface="127.0.0.1",
                policy=POLICY_TEXT,
                platform=ka.server.MACOS,
                reactor=reactor,
            )

        serve_twisted(listen, "per-accept", echo_once)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert len(failing_apply) == 1
    assert [event["error"].errno for event in events if "error" in event] == [errno.EINVAL]


@pytest.mark.parametrize("library", ["trio", "anyio"])
def test_failure_trio_anyio(failing_apply: list[int], caplog: pytest.LogCaptureFixture, library: str) -> None:
    trio = pytest.importorskip("trio")
    anyio = pytest.importorskip("anyio")

    async def echo(stream: Any) -> None:
        async with stream:
            data = await (stream.receive_some(1) if library == "trio" else stream.receive(1))
            await (stream.send_all(data) if library == "trio" else stream.send(data))

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack, anyio.create_task_group() as group:
            if library == "trio":
                import ka.integrations.trio as ktr

                listeners = await ktr.open_tcp_listeners(
                    0, host="127.0.0.1", policy=POLICY_TEXT, platform=ka.server.MACOS
                )
                for each in listeners:
                    stack.push_async_callback(each.aclose)
                group.start_soon(trio.serve_listeners, echo, listeners)
                port = listeners[0].socket.getsockname()[1]
            else:
                import ka.integrations.anyio as kan

                listener = await kan.create_tcp_listener(
                    local_host="127.0.0.1", policy=POLICY_TEXT, platform=ka.server.MACOS
                )
                stack.push_async_callback(listener.aclose)
                group.start_soon(listener.serve, echo)
                port = listener.extra(anyio.abc.SocketAttribute.local_port)
            await anyio.to_thread.run_sync(echo_once, port)
            group.cancel_scope.cancel()

    with caplog.at_level("ERROR", logger="ka.integrations"):
        trio.run(main)
    assert len(failing_apply) == 1
    assert any("could not apply" in record.getMessage() for record in caplog.records)
