"""ka.aio: asyncio and uvloop servers and clients, checked on the kernel's own values."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import time
from collections.abc import Callable, Coroutine
from contextlib import ExitStack
from typing import Any, TypeVar

import pytest

import ka
import ka.aio
import ka.server
from helpers import EXPECTED, POLICY, fresh_values, ss_timers, values_of
from ka.server import MACOS, Platform

Values = tuple[int, int, int, int, int]
_R = TypeVar("_R")
Runner = Callable[[Coroutine[Any, Any, _R]], _R]


class _Errors:
    """Collects what reaches the loop's exception handler; a test asserts it stays empty."""

    def __init__(self) -> None:
        self.contexts: list[dict[str, Any]] = []

    def install(self) -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: self.contexts.append(ctx))


PLATFORMS = [None, MACOS]
PLATFORM_IDS = ["native", "macos"]


@pytest.mark.parametrize("platform", PLATFORMS, ids=PLATFORM_IDS)
def test_start_server(run: Runner[None], platform: Platform | None) -> None:
    untouched = fresh_values()
    seen: list[Values] = []
    errors = _Errors()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(values_of(writer.get_extra_info("socket")))
        writer.write(await reader.readexactly(4))
        await writer.drain()
        writer.close()

    async def main() -> None:
        errors.install()
        server = await ka.aio.start_server(handle, "127.0.0.1", 0, keepalive=POLICY, platform=platform)
        async with server:
            assert server.is_serving()
            (plan,) = ka.aio.plans(server)
            listener = server.sockets[0]
            if platform is MACOS:
                assert plan.mode == "per-accept"
                assert values_of(listener) == untouched
            else:
                assert plan.mode == Platform.current().mode
                assert values_of(listener) == EXPECTED
            port = listener.getsockname()[1]
            for _ in range(5):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"ping")
                assert await reader.readexactly(4) == b"ping"
                writer.close()
                await writer.wait_closed()
            if platform is MACOS:
                assert values_of(listener) == untouched

    run(main())
    assert seen == [EXPECTED] * 5
    assert errors.contexts == []


@pytest.mark.parametrize("platform", PLATFORMS, ids=PLATFORM_IDS)
@pytest.mark.parametrize("buffered", [False, True], ids=["protocol", "buffered"])
def test_create_server_protocols(run: Runner[None], platform: Platform | None, buffered: bool) -> None:
    seen: list[tuple[Values, bool]] = []

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            # Whether ka hooked this instance: it must not where the listener carries the policy.
            seen.append((values_of(transport.get_extra_info("socket")), "connection_made" in vars(self)))
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[attr-defined]

    class BufferedEcho(asyncio.BufferedProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            seen.append((values_of(transport.get_extra_info("socket")), "connection_made" in vars(self)))
            self.transport = transport
            self.buffer = bytearray(64)

        def get_buffer(self, sizehint: int) -> bytearray:
            return self.buffer

        def buffer_updated(self, nbytes: int) -> None:
            self.transport.write(bytes(self.buffer[:nbytes]))  # type: ignore[attr-defined]

    factory: Callable[[], asyncio.BaseProtocol] = BufferedEcho if buffered else Echo

    async def main() -> None:
        server = await ka.aio.create_server(factory, "127.0.0.1", 0, keepalive=POLICY, platform=platform)
        async with server:
            port = server.sockets[0].getsockname()[1]
            for _ in range(3):
                reader, writer = await ka.aio.open_connection("127.0.0.1", port, keepalive=POLICY)
                writer.write(b"echo")
                assert await reader.readexactly(4) == b"echo"
                writer.close()
                await writer.wait_closed()

    run(main())
    hooked = platform is MACOS or Platform.current().mode == "per-accept"
    assert seen == [(EXPECTED, hooked)] * 3


@pytest.mark.skipif(ka.capabilities().platform != "linux", reason="counts the accept queue: Linux only")
def test_start_server_on_a_socket_already_listening(run: Runner[None]) -> None:
    seen: list[Values] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(values_of(writer.get_extra_info("socket")))
        writer.close()

    with ExitStack() as stack:
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        early = stack.enter_context(socket.create_connection(listener.getsockname(), timeout=5))
        deadline = time.monotonic() + 5
        while ka.server._queued(listener) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        listener.setblocking(False)

        async def main() -> None:
            server = await ka.aio.start_server(handle, sock=listener, keepalive=POLICY)
            async with server:
                assert ka.aio.plans(server)[0].pending == 1
                late = await asyncio.open_connection(sock=socket.create_connection(listener.getsockname()))
                for _ in range(100):
                    if len(seen) == 2:
                        break
                    await asyncio.sleep(0.01)
                late[1].close()
                await late[1].wait_closed()

        run(main())
        assert early.recv(1) == b""  # the server closed it
    assert seen == [EXPECTED, EXPECTED]


def test_clients(run: Runner[None]) -> None:
    class Quiet(asyncio.Protocol):
        made: Values | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.made = values_of(transport.get_extra_info("socket"))  # before user code: already set

    async def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            host, port = listener.getsockname()
            _, writer = await ka.aio.open_connection(host, port, keepalive=POLICY)
            transport, protocol = await ka.aio.create_connection(Quiet, host, port, keepalive=POLICY)
            try:
                assert values_of(writer.get_extra_info("socket")) == EXPECTED
                assert protocol.made == EXPECTED
                locals_ = [writer.get_extra_info("sockname"), transport.get_extra_info("sockname")]
                server_side = ss_timers(port)  # queued, never given a policy: no keepalive timer
                assert [server_side[local] for local in locals_] == ["", ""]
                for local in locals_:
                    # Keyed by peer: another process may share an ephemeral port with another peer.
                    timer = ss_timers(local[1])[(host, port)]
                    assert re.fullmatch(r"timer:\(keepalive,(3[0-3]sec|\d+ms),0\)", timer), timer
            finally:
                writer.close()
                transport.close()
                await writer.wait_closed()

    run(main())


def test_bad_input() -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match=r"policy must be a ka\.KeepAlive, not int 60"):
            await ka.aio.start_server(lambda r, w: None, "127.0.0.1", 0, keepalive=60)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"policy must be a ka\.KeepAlive, not NoneType"):
            await ka.aio.open_connection("127.0.0.1", 9, keepalive=None)  # type: ignore[arg-type]
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        async with server:
            with pytest.raises(ValueError, match=r"was not made by ka\.aio"):
                ka.aio.plans(server)

    asyncio.run(main())


WRK_SECONDS = 2
WRK_CONNECTIONS = 50
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (Debian package wrk)")
@pytest.mark.parametrize("platform", PLATFORMS, ids=PLATFORM_IDS)
def test_under_load_from_wrk(run: Runner[None], platform: Platform | None) -> None:
    """Every connection wrk opens carries the policy, however it got it."""
    untouched = fresh_values()
    seen: list[Values] = []
    errors = _Errors()
    output: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(values_of(writer.get_extra_info("socket")))
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        errors.install()
        server = await ka.aio.start_server(
            handle, "127.0.0.1", 0, keepalive=POLICY, platform=platform, backlog=256
        )
        async with server:
            listener = server.sockets[0]
            url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
            wrk = await asyncio.create_subprocess_exec(
                "wrk", "-t2", f"-c{WRK_CONNECTIONS}", f"-d{WRK_SECONDS}s", url,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await wrk.communicate()
            output.append(out.decode())
            assert wrk.returncode == 0, output[0]
            assert values_of(listener) == (untouched if platform is MACOS else EXPECTED)

    run(main())
    requests = re.search(r"(\d+) requests in", output[0])
    assert requests is not None and int(requests.group(1)) > 0, output[0]
    assert "Non-2xx" not in output[0] and "Socket errors" not in output[0], output[0]
    assert len(seen) >= WRK_CONNECTIONS
    assert [v for v in seen if v != EXPECTED] == []
    assert errors.contexts == []
