"""websockets: ``serve()`` whose connections carry a keepalive policy (checked with websockets 17.4,
and 15.0.1 on Python 3.9). ::

    policy = "idle=60 interval=10 count=5"
    async with ka.integrations.websockets.serve(handler, "0.0.0.0", 8765, policy=policy) as server:
        await server.serve_forever()

The same arguments as ``websockets.asyncio.server.serve`` plus ``policy`` (a ``ka.KeepAlive``, a
string such as ``"idle=60 interval=10 count=5"``, or None for ``KA_POLICY`` from the environment)
and ``platform`` (a ``ka.server.Platform`` to simulate another OS). The listening socket is made
by ka and handed to websockets as ``sock=``; a ``sock=`` of your own is given the policy instead.

Linux, FreeBSD ("inherit"): the listener carries the policy before ``listen()`` and the kernel
copies it into every accepted socket. macOS, Windows ("per-accept"): the listener is left alone
and each connection gets the policy in ``connection_made``, before websockets reads the opening
handshake, through websockets' ``create_connection`` hook (a subclass of ``ServerConnection``, or
of the class you pass). A failed call goes to the event loop's exception handler; the connection
proceeds without the policy.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as _serve

from ..policy import KeepAlive
from ..server import ListenerPlan, Platform
from .serving import AcceptHook, open_listener, prepare_listeners

__all__ = ["plans", "serve"]

_PLANS: weakref.WeakKeyDictionary[Server, list[ListenerPlan]] = weakref.WeakKeyDictionary()


def plans(server: Server) -> list[ListenerPlan]:
    """The plan of the listening socket of a server made by ``serve``: ``plans(server)[0].mode``."""
    try:
        return list(_PLANS[server])
    except (KeyError, TypeError):  # TypeError: an object that cannot be weakly referenced
        raise ValueError(f"{server!r} was not made by ka.integrations.websockets.serve") from None


def _connection_class(base: type[ServerConnection], hook: AcceptHook) -> type[ServerConnection]:
    class KeepAliveServerConnection(base):  # type: ignore[valid-type,misc]
        """``ServerConnection`` whose socket gets ka's policy before the handshake is read."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            hook.connection_made(transport, self)
            super().connection_made(transport)

    return KeepAliveServerConnection


def serve(
    handler: Callable[[ServerConnection], Awaitable[None]],
    host: str | None = None,
    port: int | None = None,
    *,
    policy: KeepAlive | str | None = None,
    platform: Platform | None = None,
    **kwargs: Any,
) -> Server:
    """``websockets.asyncio.server.serve`` with a keepalive policy; same arguments and result
    (await it, or use it with ``async with``, for the ``Server``).

    Without ``sock=``, ka opens the listener on ``host`` (None: every IPv4 address) and ``port``
    now, honouring ``backlog`` and ``reuse_port``; with ``sock=``, that socket gets the policy
    (connections already queued on a listening socket get it as they are accepted, on Linux).
    ``unix=True`` is refused: keepalive is TCP's. Raises ``ValueError``/``TypeError`` for a bad
    policy, host or port before any socket is made.
    """
    if kwargs.get("unix"):
        raise ValueError("serve(unix=True) listens on a Unix socket: TCP keepalive does not apply to it")
    base = kwargs.pop("create_connection", None) or ServerConnection
    if not (isinstance(base, type) and issubclass(base, ServerConnection)):
        raise TypeError(
            "create_connection must be a subclass of websockets.asyncio.server.ServerConnection "
            f"for ka to apply the policy per connection, not {base!r}"
        )
    sock = kwargs.pop("sock", None)
    opened = sock is None
    if sock is None:
        if port is None:
            raise ValueError("serve() needs a port (or sock=): ka opens the listening socket itself")
        sock, plan = open_listener(
            host,
            port,
            policy,
            platform=platform,
            backlog=kwargs.pop("backlog", None),
            reuse_port=bool(kwargs.pop("reuse_port", False)),
        )
        made = [plan]
    else:
        if host is not None or port is not None:
            raise ValueError(
                f"give serve() either host/port or sock=, not both (host={host!r}, port={port!r})"
            )
        made = prepare_listeners([sock], policy, platform=platform)
    hook = AcceptHook(made)
    if hook.needed:
        base = _connection_class(base, hook)
    try:
        server = _serve(handler, sock=sock, create_connection=base, **kwargs)
    except BaseException:
        if opened:  # a socket of the caller's stays theirs to close
            sock.close()
        raise
    _PLANS[server] = made
    inner = getattr(server, "server", None)
    if isinstance(inner, Server):  # websockets 15 returns a `serve` object holding the Server
        _PLANS[inner] = made
    return server
