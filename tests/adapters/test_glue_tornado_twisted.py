"""ka.integrations server glue: tornado and Twisted, against the real servers (wrk, plain TCP
clients), in inherit and simulated per-accept mode; tornado with connections queued before.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import pytest

import ka
import ka.server
from glue_helpers import (
    MODES,
    POLICY_TEXT,
    check_accepted,
    check_listener,
    serve_twisted,
    tcp_clients_check,
    twisted_echo_factory,
    wrk_while,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads Linux option numbers and /proc/self/fd"
)


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


# -- Twisted --------------------------------------------------------------------------------


@pytest.mark.parametrize(("platform", "mode"), MODES)
def test_twisted_listen_tcp(platform: ka.server.Platform | None, mode: str) -> None:
    pytest.importorskip("twisted")
    import ka.integrations.twisted as ktw

    def listen(reactor: Any) -> Any:
        port = ktw.listen_tcp(
            0,
            twisted_echo_factory(),
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
        factory = twisted_echo_factory()
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
        ktw.listen_tcp(0, twisted_echo_factory(), interface="127.0.0.1", reactor=object())


# -- connections queued before the policy was set (Linux counts them) -----------------------


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
