"""ka.integrations server glue: websockets and aiohttp.web, against the real servers
(wrk for HTTP, websocket clients), in inherit and simulated per-accept mode.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable
from typing import Any

import pytest

import ka
import ka.server
from glue_helpers import (
    CONNECTIONS,
    EXPECTED,
    MODES,
    POLICY_TEXT,
    accepted_values,
    check_accepted,
    check_listener,
    hello_runner,
    wrk_while,
)
from helpers import values_of

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads Linux option numbers and /proc/self/fd"
)


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
                assert site.plan.listener is sock and values_of(sock) == EXPECTED
        finally:
            await runner.cleanup()

    asyncio.run(main())
