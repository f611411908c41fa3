"""Servers with several listeners: connections queued on one listener before the policy are counted
against that listener only, whichever listener accepts first (issue 19, section 4.1: one hook
served every listener, and 2 of 4 queued connections lacked the policy)."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

import ka
from helpers import kernel_values
from ka.integrations._serving import keepalive_protocol
from ka.integrations.serving import AcceptHook, prepare_listeners

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="Linux counts queued connections"
)

POLICY = ka.KeepAlive(41, 7, 3)
HAS = (1, 41, 7, 3, 0)


def listening(
    stack: ExitStack, host: str = "127.0.0.1", port: int = 0, *, reuse_port: bool = False
) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(16)
    return sock


def connect(stack: ExitStack, listener: socket.socket, n: int) -> None:
    host, port = listener.getsockname()[:2]
    for _ in range(n):
        stack.enter_context(socket.create_connection((host, port)))


def accept_all(stack: ExitStack, listener: socket.socket, n: int) -> Iterator[socket.socket]:
    for _ in range(n):
        conn, _ = listener.accept()
        yield stack.enter_context(conn)


@pytest.mark.parametrize("second", ["127.0.0.1", "0.0.0.0", "::1", "::"])
def test_the_listener_that_accepts_first_does_not_use_up_anothers_queue(second: str) -> None:
    with ExitStack() as stack:
        a, b = listening(stack), listening(stack, second)
        connect(stack, a, 2)  # queued on A before the policy: they lack it
        hook = AcceptHook(prepare_listeners([a, b], POLICY))
        assert [plan.pending for plan in hook.plans] == [2, 0]
        connect(stack, b, 2)  # after: they inherit it from B
        # B accepts first (as an event loop may), then A.
        for conn in accept_all(stack, b, 2):
            assert hook(conn) is False and kernel_values(conn) == HAS
        for conn in accept_all(stack, a, 2):
            assert hook(conn) is True and kernel_values(conn) == HAS
        assert [plan.pending for plan in hook.plans] == [0, 0] and not hook.needed


def test_listeners_sharing_an_address_decide_by_the_socket() -> None:
    # SO_REUSEPORT: the same address, two queues; the socket's own values say whether it lacks the policy.
    with ExitStack() as stack:
        a = listening(stack, reuse_port=True)
        connect(stack, a, 2)
        b = listening(stack, port=a.getsockname()[1], reuse_port=True)
        hook = AcceptHook(prepare_listeners([a, b], POLICY))
        assert [plan.pending for plan in hook.plans] == [2, 0]
        connect(stack, b, 6)  # the kernel spreads these over A and B
        accepted = []
        for listener in (b, a):
            listener.setblocking(False)
            while True:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    break
                conn.setblocking(True)
                accepted.append(stack.enter_context(conn))
                hook(conn)
        assert len(accepted) == 8
        assert all(kernel_values(conn) == HAS for conn in accepted)
        assert [plan.pending for plan in hook.plans] == [0, 0]


def test_gunicorns_protocol_hook_counts_per_listener() -> None:
    # ka.integrations.gunicorn gives uvicorn workers keepalive_protocol(AcceptHook(plans)).
    made = []

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.append(transport)

    class Transport(asyncio.Transport):
        def __init__(self, sock: socket.socket) -> None:
            super().__init__({"socket": sock})

    with ExitStack() as stack:
        a, b = listening(stack), listening(stack, "::1")
        connect(stack, a, 2)
        protocol = keepalive_protocol(Protocol, AcceptHook(prepare_listeners([a, b], POLICY)))
        connect(stack, b, 2)
        for listener in (b, a):
            for conn in accept_all(stack, listener, 2):
                protocol().connection_made(Transport(conn))
                assert kernel_values(conn) == HAS
        assert len(made) == 4


def test_tornado_with_two_listeners() -> None:
    pytest.importorskip("tornado")
    import tornado.iostream
    import tornado.tcpserver

    from ka.integrations.tornado import KeepAliveMixin

    class Server(KeepAliveMixin, tornado.tcpserver.TCPServer):
        keepalive = POLICY

    async def main() -> None:
        with ExitStack() as stack:
            a, b = listening(stack), listening(stack)
            connect(stack, a, 2)
            server = Server()
            server.add_sockets([a, b])
            try:
                assert [plan.pending for plan in server.keepalive_plans] == [2, 0]
                connect(stack, b, 2)
                # What tornado's accept handlers do, B's first: each stream goes through the mixin.
                for listener in (b, a):
                    for conn in accept_all(stack, listener, 2):
                        server.keepalive_accepted(tornado.iostream.IOStream(conn), conn.getpeername())
                        assert kernel_values(conn) == HAS
            finally:
                server.stop()

    asyncio.run(main())
