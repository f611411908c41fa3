"""aiohttp: a connector whose connections carry a keepalive policy (aiohttp 3.12+), and aiohttp.web
servers whose accepted connections do (checked with aiohttp 3.14.5, and 3.13.5 on Python 3.9). ::

    async with aiohttp.ClientSession(connector=ka.integrations.aiohttp.connector(policy)) as session:
        ...

or ``aiohttp.TCPConnector(socket_factory=ka.integrations.aiohttp.socket_factory(policy))``.

Servers, where ``policy`` is a ``ka.KeepAlive``, a string (``"idle=60 interval=10 count=5"``) or
None for ``KA_POLICY`` from the environment:

    web.run_app(app, sock=ka.integrations.aiohttp.listener("0.0.0.0", 8080, policy))

    runner = web.AppRunner(app)
    await runner.setup()
    await ka.integrations.aiohttp.KeepAliveSite(runner, "0.0.0.0", 8080, policy=policy).start()
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from ..policy import KeepAlive, require_policy, resolve_policy
from ..server import Listener, ListenerPlan, Platform, create_server
from . import with_policy
from .serving import AcceptHook, listen_address, open_listener, prepare_listeners

__all__ = ["KeepAliveSite", "connector", "listener", "socket_factory"]

# aiohappyeyeballs' AddrInfoType: (family, type, proto, canonname, address)
AddrInfo = tuple[Any, Any, int, str, Any]


def socket_factory(policy: KeepAlive) -> Callable[[AddrInfo], socket.socket]:
    """A ``socket_factory`` for ``aiohttp.TCPConnector``: a new socket with ``policy`` applied.

    The policy is applied before ``connect()``; a failed call closes the socket and raises
    ``OSError`` with ``fd`` and ``option``, which aiohttp reports as a connection error.
    """
    policy = require_policy(policy)

    def factory(addr_info: AddrInfo) -> socket.socket:
        family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
        return with_policy(socket.socket(family, type_, proto), policy)

    return factory


def connector(policy: KeepAlive, **kwargs: Any) -> aiohttp.TCPConnector:
    """An ``aiohttp.TCPConnector`` (other arguments as its own) whose connections carry ``policy``.

    Call it inside a running event loop, as ``TCPConnector`` itself requires.
    """
    if "socket_factory" not in inspect.signature(aiohttp.TCPConnector).parameters:
        raise RuntimeError(
            f"aiohttp {aiohttp.__version__} has no TCPConnector(socket_factory=...): "
            "ka.integrations.aiohttp needs aiohttp 3.12 or later"
        )
    return aiohttp.TCPConnector(socket_factory=socket_factory(policy), **kwargs)


# -- aiohttp.web servers -----------------------------------------------------------------------


def listener(
    host: str | None,
    port: int,
    policy: KeepAlive | str | None = None,
    *,
    platform: Platform | None = None,
    backlog: int = 128,
    reuse_port: bool = False,
) -> Listener:
    """A listening ``ka.server.Listener`` for ``web.run_app(app, sock=...)``.

    Inherit mode (Linux, FreeBSD): the policy is set before ``listen()`` and the kernel copies it
    into every accepted socket, whatever the event loop. Per-accept mode (macOS, Windows): the
    listener's own ``accept()`` applies the policy, which holds where the event loop calls it:
    asyncio's selector loops (the default on macOS) do; the Windows proactor loop and uvloop
    accept below Python and do not, so use ``KeepAliveSite`` there. ``host`` None listens on every
    IPv4 address. aiohttp turns ``SO_KEEPALIVE`` on for each connection itself
    (``tcp_keepalive=True``): pass ``tcp_keepalive=False`` to ``run_app`` with a disabled policy.
    """
    family, address = listen_address(host, port)
    return create_server(
        address,
        resolve_policy(policy),
        family=family,
        backlog=backlog,
        reuse_port=reuse_port,
        platform=platform,
    )


def _handler_class(base: type[web.RequestHandler], hook: AcceptHook) -> type[web.RequestHandler]:
    class KeepAliveRequestHandler(base):  # type: ignore[valid-type,misc]
        """aiohttp's ``RequestHandler`` whose socket gets ka's policy before the first read."""

        __slots__ = ()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            hook.connection_made(transport, self)
            super().connection_made(transport)

    return KeepAliveRequestHandler


class KeepAliveSite(web.SockSite):
    """An aiohttp.web site (a ``web.SockSite``) whose connections carry a keepalive policy.

    ``KeepAliveSite(runner, host, port, policy=...)`` opens its listener now, with the policy set
    before ``listen()`` in inherit mode; ``KeepAliveSite(runner, sock=sock, policy=...)`` gives a
    socket of yours the policy instead. Per-accept mode (macOS, Windows, or ``platform=`` saying
    so): the listener is untouched and each connection's socket gets the policy in
    ``connection_made``, before aiohttp reads a byte, whatever the event loop (tested with
    asyncio's selector loop and uvloop). aiohttp's ``RequestHandler`` has ``__slots__``, so its per-instance
    ``connection_made`` cannot be replaced: each handler made for this site is given a subclass
    with the same slots whose ``connection_made`` applies the policy first. A failed call goes to
    the loop's exception handler and the connection proceeds. ``site.plan.mode`` says which path
    is in force.
    """

    __slots__ = ("_hook", "plan")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None = None,
        port: int | None = None,
        *,
        sock: socket.socket | None = None,
        policy: KeepAlive | str | None = None,
        platform: Platform | None = None,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 128,
        reuse_port: bool = False,
    ) -> None:
        if runner.server is None:  # before the socket is made: aiohttp would raise only later
            raise RuntimeError("Call runner.setup() before making a site")
        if sock is None:
            if port is None:
                raise ValueError("KeepAliveSite needs a port (or sock=)")
            sock, plan = open_listener(
                host, port, policy, platform=platform, backlog=backlog, reuse_port=reuse_port
            )
            try:
                super().__init__(runner, sock, ssl_context=ssl_context, backlog=backlog)
            except BaseException:
                sock.close()
                raise
        else:
            if host is not None or port is not None:
                raise ValueError(
                    f"give KeepAliveSite either host/port or sock=, not both (host={host!r}, port={port!r})"
                )
            (plan,) = prepare_listeners([sock], policy, platform=platform)
            super().__init__(runner, sock, ssl_context=ssl_context, backlog=backlog)
        self.plan: ListenerPlan = plan
        self._hook = AcceptHook([plan])

    async def start(self) -> None:
        hook = self._hook
        if not hook.needed:
            await super().start()
            return
        await super(web.SockSite, self).start()  # BaseSite.start registers the site with its runner
        server = self._runner.server
        assert server is not None
        handler_class: type[web.RequestHandler] | None = None

        def factory() -> web.RequestHandler:
            nonlocal handler_class
            handler = server()
            if handler_class is None or handler_class.__bases__[0] is not type(handler):
                handler_class = _handler_class(type(handler), hook)
            handler.__class__ = handler_class
            return handler

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            factory, sock=self._sock, ssl=self._ssl_context, backlog=self._backlog
        )
