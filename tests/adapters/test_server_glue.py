"""ka.integrations server glue against the real servers: websockets, aiohttp.web, tornado, Twisted,
trio and AnyIO, driven by real clients (wrk for HTTP, websocket clients, plain TCP for echo).

Every accepted connection is counted and read back from the server's own sockets: in-process by
getsockopt on the descriptors the server holds (found in /proc/self/fd by local port), and for the
documented examples run as processes by ``ka show --pid PID --json``. Each server is tested in
inherit mode (the Linux path) and in simulated per-accept mode (``platform=ka.server.MACOS``:
the listener stays untouched, so only the server's per-accept hook can have set the values).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

import ka
import ka.server
from helpers import kernel_values

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads Linux option numbers and /proc/self/fd"
)

POLICY_TEXT = "idle=37 interval=6 count=3"
EXPECTED = (1, 37, 6, 3, 0)  # SO_KEEPALIVE, idle, interval, count, TCP_USER_TIMEOUT ms
CONNECTIONS = 20
EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
MODES = [
    pytest.param(None, "inherit", id="inherit"),
    pytest.param(ka.server.MACOS, "per-accept", id="per-accept"),
]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Any], Any]:
    """Runs a coroutine on a fresh event loop: the stdlib's, then uvloop's where installed."""
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed")
        return uvloop.run  # type: ignore[no-any-return]
    return asyncio.run


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


def listener_values(sock: Any) -> tuple[int, int, int, int, int]:
    with socket.socket(fileno=os.dup(sock.fileno())) as dup:
        return kernel_values(dup)


def check_listener(sock: Any, mode: str) -> None:
    """Inherit: the listener carries the policy. Per-accept: ka never touched it."""
    values = listener_values(sock)
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


# -- websockets -----------------------------------------------------------------------------


@pytest.mark.parametrize(("platform", "mode"), MODES)
def test_websockets(platform: ka.server.Platform | None, mode: str, run: Callable[[Any], Any]) -> None:
    pytest.importorskip("websockets")
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import ServerConnection

    import ka.integrations.websockets as kws

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with kws.serve(echo, "127.0.0.1", 0, policy=POLICY_TEXT, platform=platform) as server:
            assert [plan.mode for plan in kws.plans(server)] == [mode]
            listener = server.sockets[0]
            port = listener.getsockname()[1]
            check_listener(listener, mode)
            clients = [await connect(f"ws://127.0.0.1:{port}") for _ in range(CONNECTIONS)]
            try:
                for client in clients:
                    await client.send("ping")
                    assert await client.recv() == "ping"
                assert len(server.connections) == CONNECTIONS
                check_accepted(port)
            finally:
                for client in clients:
                    await client.close()

    run(main())


def test_websockets_own_socket_and_refusals() -> None:
    pytest.importorskip("websockets")
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import ServerConnection

    import ka.integrations.websockets as kws

    async def echo(ws: ServerConnection) -> None:
        await ws.send("hi")

    async def main() -> None:
        sock = socket.create_server(("127.0.0.1", 0))
        with pytest.raises(ValueError, match="either host/port or sock="):
            kws.serve(echo, "127.0.0.1", 1, sock=sock, policy=POLICY_TEXT)
        assert sock.fileno() >= 0  # the caller's socket is left open
        # a socket of the caller's, already listening: it gets the policy, then serves
        async with kws.serve(echo, sock=sock, policy=POLICY_TEXT) as server:
            assert kws.plans(server)[0].listener is sock
            async with connect(f"ws://127.0.0.1:{sock.getsockname()[1]}") as client:
                assert await client.recv() == "hi"
                check_accepted(sock.getsockname()[1], 1)

    asyncio.run(main())

    with pytest.raises(ValueError, match="Unix socket"):
        kws.serve(echo, unix=True, path="/tmp/x", policy=POLICY_TEXT)
    with pytest.raises(TypeError, match="subclass of websockets"):
        kws.serve(echo, "127.0.0.1", 0, policy=POLICY_TEXT, create_connection=lambda *a: None)
    with pytest.raises(ValueError, match="idle"):
        kws.serve(echo, "127.0.0.1", 0, policy="idle=-1")
    with pytest.raises(ValueError, match="was not made by"):
        kws.plans(object())  # type: ignore[arg-type]


# -- aiohttp.web ----------------------------------------------------------------------------


async def _hello(request: Any) -> Any:
    from aiohttp import web

    return web.Response(text="hello\n")


@contextlib.asynccontextmanager
async def hello_runner() -> AsyncIterator[Any]:
    """An ``aiohttp.web.AppRunner`` set up for an app answering "hello" on ``/``; cleaned up after."""
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/", _hello)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        yield runner
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("platform", "mode"), MODES)
def test_aiohttp_site_wrk(platform: ka.server.Platform | None, mode: str, run: Callable[[Any], Any]) -> None:
    pytest.importorskip("aiohttp")

    import ka.integrations.aiohttp as kah

    async def main() -> None:
        async with hello_runner() as runner:
            site = kah.KeepAliveSite(runner, "127.0.0.1", 0, policy=POLICY_TEXT, platform=platform)
            await site.start()
            assert site.plan.mode == mode
            listener = site.plan.listener
            check_listener(listener, mode)
            port = listener.getsockname()[1]
            await wrk_while(port, lambda: check_accepted(port, reconnects=True))

    run(main())


@pytest.mark.parametrize(("platform", "mode"), MODES)
def test_aiohttp_run_app_listener(platform: ka.server.Platform | None, mode: str) -> None:
    """``listener()`` as ``run_app(sock=...)`` serves it: through aiohttp's own ``SockSite``.
    Per-accept works here because asyncio's selector loop calls the listener's ``accept()``."""
    pytest.importorskip("aiohttp")
    from aiohttp import web

    import ka.integrations.aiohttp as kah

    async def main() -> None:
        async with hello_runner() as runner:
            sock = kah.listener("127.0.0.1", 0, POLICY_TEXT, platform=platform)
            assert sock.mode == mode
            check_listener(sock, mode)
            await web.SockSite(runner, sock).start()
            port = sock.getsockname()[1]
            await wrk_while(port, lambda: check_accepted(port, reconnects=True))

    asyncio.run(main())


def test_aiohttp_run_app_listener_per_accept_needs_a_python_accept() -> None:
    """The documented limit of ``run_app(sock=listener(...))`` in per-accept mode: uvloop accepts
    below Python, never calls the listener's ``accept()``, so the policy is not applied (aiohttp
    still turns SO_KEEPALIVE on by itself, with the system's timings); ``KeepAliveSite`` is the
    form that works there (``test_aiohttp_site_wrk[uvloop-per-accept]``)."""
    pytest.importorskip("aiohttp")
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed")
    from aiohttp import web

    import ka.integrations.aiohttp as kah

    async def main() -> None:
        async with hello_runner() as runner:
            sock = kah.listener("127.0.0.1", 0, POLICY_TEXT, platform=ka.server.MACOS)
            await web.SockSite(runner, sock).start()
            port = sock.getsockname()[1]

            def check() -> None:
                values = accepted_values(port)
                assert len(values) == CONNECTIONS
                assert all(value[1:4] != EXPECTED[1:4] for value in values), values

            await wrk_while(port, check)

    uvloop.run(main())


def test_aiohttp_site_refusals() -> None:
    pytest.importorskip("aiohttp")
    from aiohttp import web

    import ka.integrations.aiohttp as kah

    async def main() -> None:
        runner = web.AppRunner(web.Application())
        with pytest.raises(RuntimeError, match="setup"):
            kah.KeepAliveSite(runner, "127.0.0.1", 0, policy=POLICY_TEXT)
        await runner.setup()
        try:
            with pytest.raises(ValueError, match="needs a port"):
                kah.KeepAliveSite(runner, policy=POLICY_TEXT)
            with pytest.raises(ValueError, match="port must be"):
                kah.KeepAliveSite(runner, "127.0.0.1", 70000, policy=POLICY_TEXT)
            with socket.create_server(("127.0.0.1", 0)) as sock:
                with pytest.raises(ValueError, match="not both"):
                    kah.KeepAliveSite(runner, "127.0.0.1", 0, sock=sock, policy=POLICY_TEXT)
                site = kah.KeepAliveSite(runner, sock=sock, policy=POLICY_TEXT)
                assert site.plan.listener is sock and listener_values(sock) == EXPECTED
        finally:
            await runner.cleanup()

    asyncio.run(main())


# -- tornado --------------------------------------------------------------------------------


@pytest.mark.parametrize(("platform", "mode"), MODES)
def test_tornado_bind_sockets_add_sockets(platform: ka.server.Platform | None, mode: str) -> None:
    pytest.importorskip("tornado")
    import tornado.netutil
    import tornado.web

    import ka.integrations.tornado as kt

    class Hello(tornado.web.RequestHandler):
        def get(self) -> None:
            self.write("hello\n")

    async def main() -> None:
        app = tornado.web.Application([("/", Hello)])
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server = kt.HTTPServer(app, keepalive=POLICY_TEXT, keepalive_platform=platform)
        server.add_sockets(sockets)
        try:
            assert [plan.mode for plan in server.keepalive_plans] == [mode]
            check_listener(sockets[0], mode)
            port = sockets[0].getsockname()[1]
            await wrk_while(port, lambda: check_accepted(port, reconnects=True))
        finally:
            server.stop()

    asyncio.run(main())


def tornado_echo_server(platform: ka.server.Platform | None) -> Any:
    """A TCPServer of the user's kind: the mixin first, policy as a class attribute, and its own
    ``handle_stream`` (an echo) that the mixin must not lose."""
    import tornado.iostream
    import tornado.tcpserver

    import ka.integrations.tornado as kt

    class Echo(kt.KeepAliveMixin, tornado.tcpserver.TCPServer):
        keepalive = POLICY_TEXT
        keepalive_platform = platform

        async def handle_stream(self, stream: tornado.iostream.IOStream, address: Any) -> None:
            try:
                while True:
                    await stream.write(await stream.read_bytes(1))
            except tornado.iostream.StreamClosedError:
                pass

    return Echo()


@pytest.mark.parametrize(("platform", "mode"), MODES)
def test_tornado_tcpserver_mixin(platform: ka.server.Platform | None, mode: str) -> None:
    """A TCPServer of the user's with the mixin (class attributes), started by ``listen``."""
    pytest.importorskip("tornado")

    async def main() -> None:
        server = tornado_echo_server(platform)
        server.listen(0, "127.0.0.1")
        try:
            port = server.keepalive_plans[0].listener.getsockname()[1]
            await asyncio.to_thread(tcp_clients_check, port)
        finally:
            server.stop()

    asyncio.run(main())


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


# -- Twisted --------------------------------------------------------------------------------


def _twisted_echo_factory() -> Any:
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


@pytest.mark.parametrize(("platform", "mode"), MODES)
def test_twisted_listen_tcp(platform: ka.server.Platform | None, mode: str) -> None:
    pytest.importorskip("twisted")
    import ka.integrations.twisted as ktw

    def listen(reactor: Any) -> Any:
        port = ktw.listen_tcp(
            0,
            _twisted_echo_factory(),
            interface="127.0.0.1",
            policy=POLICY_TEXT,
            platform=platform,
            reactor=reactor,
        )
        assert port.keepalive_plan.mode == mode
        assert isinstance(port.factory, ktw.KeepAliveFactory) == (mode == "per-accept")
        return port

    serve_twisted(listen, mode)


@pytest.mark.parametrize("how", ["listenTCP", "endpoint"])
@pytest.mark.parametrize(("platform", "mode"), MODES)
def test_twisted_keepalive_port(platform: ka.server.Platform | None, mode: str, how: str) -> None:
    """A port from ``reactor.listenTCP`` or a server endpoint string, given the policy afterwards
    (``port.socket``; per-accept by swapping ``port.factory``)."""
    pytest.importorskip("twisted")
    from twisted.internet.endpoints import serverFromString

    import ka.integrations.twisted as ktw

    def listen(reactor: Any) -> Any:
        factory = _twisted_echo_factory()
        if how == "listenTCP":
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        else:
            ports: list[Any] = []
            serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory).addCallback(ports.append)  # type: ignore[no-untyped-call]
            (port,) = ports  # a TCP endpoint's Deferred has fired by now
        assert ktw.keepalive_port(port, POLICY_TEXT, platform=platform).mode == mode
        return port

    serve_twisted(listen, mode)


def test_twisted_refusals() -> None:
    pytest.importorskip("twisted")
    import ka.integrations.twisted as ktw

    with pytest.raises(TypeError, match="listening TCP port"):
        ktw.keepalive_port(object(), POLICY_TEXT)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="KA_POLICY"):
        ktw.listen_tcp(0, _twisted_echo_factory(), interface="127.0.0.1", reactor=object())


# -- trio -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("platform", "mode"), MODES)
def test_trio_serve_tcp(platform: ka.server.Platform | None, mode: str) -> None:
    trio = pytest.importorskip("trio")
    import ka.integrations.trio as ktr

    async def echo(stream: Any) -> None:
        async for data in stream:
            await stream.send_all(data)

    async def main() -> None:
        async with trio.open_nursery() as nursery:

            async def serve(task_status: Any) -> None:
                await ktr.serve_tcp(
                    echo, 0, host="127.0.0.1", policy=POLICY_TEXT, platform=platform, task_status=task_status
                )

            listeners = await nursery.start(serve)
            assert [listener.plan.mode for listener in listeners] == [mode]
            check_listener(listeners[0].socket, mode)
            await trio.to_thread.run_sync(tcp_clients_check, listeners[0].socket.getsockname()[1])
            nursery.cancel_scope.cancel()

    trio.run(main)


@pytest.mark.parametrize(("platform", "mode"), MODES)
def test_trio_keepalive_listeners(platform: ka.server.Platform | None, mode: str) -> None:
    """Listeners from ``trio.open_tcp_listeners`` wrapped afterwards, served by ``serve_listeners``."""
    trio = pytest.importorskip("trio")
    import ka.integrations.trio as ktr

    async def echo(stream: Any) -> None:
        async for data in stream:
            await stream.send_all(data)

    async def main() -> None:
        listeners = ktr.keepalive_listeners(
            await trio.open_tcp_listeners(0, host="127.0.0.1"), POLICY_TEXT, platform=platform
        )
        assert [listener.plan.mode for listener in listeners] == [mode]
        with pytest.raises(TypeError, match=r"trio\.SocketListener"):
            ktr.keepalive_listeners(listeners, POLICY_TEXT)  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, echo, listeners)
            check_listener(listeners[0].socket, mode)
            await trio.to_thread.run_sync(tcp_clients_check, listeners[0].socket.getsockname()[1])
            nursery.cancel_scope.cancel()

    trio.run(main)


# -- AnyIO ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize(("platform", "mode"), MODES)
def test_anyio_create_tcp_listener(platform: ka.server.Platform | None, mode: str, backend: str) -> None:
    anyio = pytest.importorskip("anyio")
    if backend == "trio":
        pytest.importorskip("trio")
    from anyio.abc import SocketAttribute

    import ka.integrations.anyio as kan

    async def echo(stream: Any) -> None:
        async with stream:
            async for data in stream:
                await stream.send(data)

    async def main() -> None:
        listener = await kan.create_tcp_listener(
            local_host="127.0.0.1", policy=POLICY_TEXT, platform=platform
        )
        async with listener, anyio.create_task_group() as group:
            assert all(isinstance(each, kan.KeepAliveListener) for each in listener.listeners)
            assert [each.plan.mode for each in listener.listeners] == [mode]  # type: ignore[attr-defined]
            check_listener(listener.extra(SocketAttribute.raw_socket), mode)
            group.start_soon(listener.serve, echo)
            await anyio.to_thread.run_sync(tcp_clients_check, listener.extra(SocketAttribute.local_port))
            group.cancel_scope.cancel()

    anyio.run(main, backend=backend)


def test_anyio_keepalive_listener_refusals() -> None:
    anyio = pytest.importorskip("anyio")
    import ka.integrations.anyio as kan

    async def main() -> None:
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
            wrapped = kan.keepalive_listener(listener, POLICY_TEXT)
            with pytest.raises(TypeError, match="SocketListener"):
                kan.keepalive_listener(wrapped, POLICY_TEXT)

    anyio.run(main)


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
        # server_<library>.py needs that library in this environment (the integrations extra)
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
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
                _twisted_echo_factory(),
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


# -- connections queued before the policy was set (Linux counts them) -----------------------


def test_queued_before_policy_trio() -> None:
    """Clients connect to trio's listener before ka wraps it: the kernel made their sockets
    without the policy; the plan counts them and ``accept()`` gives each one the policy."""
    trio = pytest.importorskip("trio")
    import ka.integrations.trio as ktr

    async def echo(stream: Any) -> None:
        async with stream:
            async for data in stream:
                await stream.send_all(data)

    async def main() -> None:
        opened = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = opened[0].socket.getsockname()[1]
        early = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            listeners = ktr.keepalive_listeners(opened, POLICY_TEXT)
            assert [listener.plan.pending for listener in listeners] == [3]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.serve_listeners, echo, listeners)
                await trio.to_thread.run_sync(tcp_clients_check, port, 3, early)
                nursery.cancel_scope.cancel()
            for listener in listeners:
                await listener.aclose()
        finally:
            for client in early:
                client.close()

    trio.run(main)


def test_queued_before_policy_tornado() -> None:
    """The same through tornado: ``bind_sockets`` listens, clients queue, then ``add_sockets``."""
    pytest.importorskip("tornado")
    import tornado.iostream
    import tornado.netutil
    import tornado.tcpserver

    async def main() -> None:
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        port = sockets[0].getsockname()[1]
        early = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        server = tornado_echo_server(None)
        try:
            server.add_sockets(sockets)
            assert [plan.pending for plan in server.keepalive_plans] == [3]
            await asyncio.to_thread(tcp_clients_check, port, 3, early)
        finally:
            server.stop()
            for client in early:
                client.close()

    asyncio.run(main())


# -- bad input: a clear error before any socket is made ------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(
    ("host", "port", "policy", "error", "match"),
    [
        ("127.0.0.1", -1, POLICY_TEXT, ValueError, r"port must be an int from 0 to 65535, not -1"),
        ("127.0.0.1", 65536, POLICY_TEXT, ValueError, r"not 65536"),
        ("127.0.0.1", True, POLICY_TEXT, ValueError, r"not True"),
        ("127.0.0.1", "80", POLICY_TEXT, ValueError, r"not '80'"),
        (b"127.0.0.1", 0, POLICY_TEXT, TypeError, r"host must be a str or None, not bytes"),
        ("no-such-host.invalid", 0, POLICY_TEXT, ValueError, r"'no-such-host\.invalid' does not resolve"),
        ("127.0.0.1", 0, "idle=0", ValueError, r"idle"),
        ("127.0.0.1", 0, (37, 6, 3), TypeError, r"policy must be"),
    ],
)
def test_open_listener_refuses_bad_input(host: Any, port: Any, policy: Any, error: type, match: str) -> None:
    from ka.integrations.serving import open_listener

    before = open_fds()
    with pytest.raises(error, match=match):
        open_listener(host, port, policy)
    assert open_fds() == before


def test_open_listener_without_policy_names_ka_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    from ka.integrations.serving import open_listener

    monkeypatch.delenv("KA_POLICY", raising=False)
    with pytest.raises(ValueError, match="KA_POLICY"):
        open_listener("127.0.0.1", 0)
    monkeypatch.setenv("KA_POLICY", POLICY_TEXT)
    sock, plan = open_listener("127.0.0.1", 0)
    with sock:
        assert plan.listener is sock and type(sock) is socket.socket
        assert listener_values(sock) == EXPECTED


def test_open_listener_port_in_use() -> None:
    from ka.integrations.serving import open_listener

    with socket.create_server(("127.0.0.1", 0)) as taken:
        before = open_fds()
        with pytest.raises(OSError, match="while attempting to bind"):
            open_listener("127.0.0.1", taken.getsockname()[1], POLICY_TEXT)
        assert open_fds() == before
