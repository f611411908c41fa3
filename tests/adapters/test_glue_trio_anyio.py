"""ka.integrations server glue: trio and AnyIO listeners, connections queued before the policy,
and open_listener's refusals of bad input.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import pytest

import ka
import ka.server
from glue_helpers import (
    EXPECTED,
    MODES,
    POLICY_TEXT,
    check_listener,
    tcp_clients_check,
)
from helpers import values_of

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads Linux option numbers and /proc/self/fd"
)


# -- trio -----------------------------------------------------------------------------------


async def trio_echo(stream: Any) -> None:
    async for data in stream:
        await stream.send_all(data)


@pytest.mark.parametrize(("platform", "mode"), MODES)
def test_trio_serve_tcp(platform: ka.server.Platform | None, mode: str) -> None:
    trio = pytest.importorskip("trio")
    import ka.integrations.trio as ktr

    async def main() -> None:
        async with trio.open_nursery() as nursery:

            async def serve(task_status: Any) -> None:
                await ktr.serve_tcp(
                    trio_echo,
                    0,
                    host="127.0.0.1",
                    policy=POLICY_TEXT,
                    platform=platform,
                    task_status=task_status,
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

    async def main() -> None:
        listeners = ktr.keepalive_listeners(
            await trio.open_tcp_listeners(0, host="127.0.0.1"), POLICY_TEXT, platform=platform
        )
        assert [listener.plan.mode for listener in listeners] == [mode]
        with pytest.raises(TypeError, match=r"trio\.SocketListener"):
            ktr.keepalive_listeners(listeners, POLICY_TEXT)  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, trio_echo, listeners)
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
        assert values_of(sock) == EXPECTED


def test_open_listener_port_in_use() -> None:
    from ka.integrations.serving import open_listener

    with socket.create_server(("127.0.0.1", 0)) as taken:
        before = open_fds()
        with pytest.raises(OSError, match="while attempting to bind"):
            open_listener("127.0.0.1", taken.getsockname()[1], POLICY_TEXT)
        assert open_fds() == before
