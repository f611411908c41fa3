"""asyncio (and uvloop) servers and connections with a keepalive policy.

The same signatures as asyncio's own, plus ``keepalive=``::

    server = await ka.aio.start_server(handle, "127.0.0.1", 8080, keepalive=policy)
    reader, writer = await ka.aio.open_connection("127.0.0.1", 6379, keepalive=policy)

Servers follow ``ka.server``: where accepted sockets inherit the listener's options (Linux,
FreeBSD) the listening sockets get the policy before they start listening and nothing runs per
connection; elsewhere (macOS, Windows) the listeners are left alone and every accepted socket gets
the policy before the protocol's ``connection_made`` (or the ``client_connected_cb``) runs.
``ka.aio.plans(server)`` returns the ``ListenerPlan`` of each listening socket.
``await ka.aio.retrofit(sockets, policy)`` is ``ka.retrofit`` with its wait awaited.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, Union

from . import apply
from .bridge import Retrofit, RetrofitResult
from .policy import KeepAlive, require_policy
from .server import (
    PER_ACCEPT,
    ListenerPlan,
    Platform,
    prepare_listener,
)
from .targets import Backend, Targets

__all__ = ["create_connection", "create_server", "open_connection", "plans", "retrofit", "start_server"]

_P = TypeVar("_P", bound=asyncio.BaseProtocol)
ClientConnectedCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Union[Awaitable[None], None]]

_PLANS: weakref.WeakKeyDictionary[Any, list[ListenerPlan]] = weakref.WeakKeyDictionary()
_STREAM_LIMIT = 2**16  # asyncio.streams._DEFAULT_LIMIT


def plans(server: asyncio.AbstractServer) -> list[ListenerPlan]:
    """The plan of each listening socket of a server made by ``ka.aio``: ``plans(server)[0].mode``."""
    try:
        return list(_PLANS[server])
    except KeyError:
        raise ValueError(f"{server!r} was not made by ka.aio.create_server or ka.aio.start_server") from None


class _ApplyFirst:
    """Wraps a protocol's ``connection_made`` so the transport's socket gets the policy first."""

    __slots__ = ("errors", "policy", "should_apply")

    def __init__(
        self, policy: KeepAlive, should_apply: Callable[[], bool], errors: list[OSError] | None
    ) -> None:
        self.policy = policy
        self.should_apply = should_apply
        self.errors = errors  # client side: failures are raised to the caller afterwards

    def wrap(self, protocol: _P) -> _P:
        original = protocol.connection_made
        policy, should_apply, errors = self.policy, self.should_apply, self.errors

        def connection_made(transport: asyncio.BaseTransport) -> None:
            if should_apply():
                sock = transport.get_extra_info("socket")
                if sock is not None:  # None for non-socket transports: nothing to apply to
                    try:
                        apply(sock, policy)
                    except OSError as exc:
                        if errors is not None:
                            errors.append(exc)
                        else:
                            asyncio.get_running_loop().call_exception_handler(
                                {
                                    "message": f"ka could not apply {policy!r} to an accepted connection",
                                    "exception": exc,
                                    "transport": transport,
                                    "protocol": protocol,
                                }
                            )
            original(transport)

        try:
            protocol.connection_made = connection_made  # type: ignore[method-assign]
        except AttributeError:
            raise TypeError(
                f"{type(protocol).__name__} does not allow setting connection_made on its instances "
                "(__slots__ without __dict__): ka.aio cannot apply the keepalive policy before it runs."
            ) from None
        return protocol


async def create_server(
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    host: str | list[str] | None = None,
    port: int | None = None,
    *,
    keepalive: KeepAlive,
    platform: Platform | None = None,
    **kwds: Any,
) -> asyncio.Server:
    """``loop.create_server`` whose connections carry ``keepalive``; same arguments and result.

    Inherit mode: the listening sockets get the policy between ``bind()`` and ``listen()``
    (asyncio listens when serving starts; ka creates the server with ``start_serving=False``,
    applies, then starts serving unless you passed ``start_serving=False`` yourself). Per-accept
    mode: each accepted socket gets the policy before the protocol's ``connection_made``; a
    failure goes to the loop's exception handler and the connection proceeds.
    ``platform`` injects a ``ka.server.Platform`` (to simulate another OS).
    """
    policy = require_policy(keepalive)
    plat = Platform.check(platform)
    loop = asyncio.get_running_loop()
    start_serving = kwds.pop("start_serving", True)
    made: list[ListenerPlan] = []

    def should_apply() -> bool:
        return any(plan.needs_apply() for plan in made)

    # A socket passed in may already be listening with connections queued (counted by the plan).
    needs_hook = plat.mode == PER_ACCEPT or kwds.get("sock") is not None
    factory = protocol_factory
    if needs_hook:
        hook = _ApplyFirst(policy, should_apply, None)

        def factory() -> asyncio.BaseProtocol:
            return hook.wrap(protocol_factory())

    server = await loop.create_server(factory, host, port, start_serving=False, **kwds)
    try:
        made.extend(prepare_listener(sock, policy, platform=plat) for sock in server.sockets)
    except BaseException:
        server.close()
        raise
    _PLANS[server] = list(made)
    if start_serving:
        await server.start_serving()
    return server


async def start_server(
    client_connected_cb: ClientConnectedCallback,
    host: str | list[str] | None = None,
    port: int | None = None,
    *,
    keepalive: KeepAlive,
    platform: Platform | None = None,
    limit: int = _STREAM_LIMIT,
    **kwds: Any,
) -> asyncio.Server:
    """``asyncio.start_server`` whose connections carry ``keepalive``; same arguments and result.

    ``client_connected_cb(reader, writer)`` runs after the accepted socket has the policy (from
    the listener or from ka). See ``create_server`` for the two modes.
    """
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return await create_server(factory, host, port, keepalive=keepalive, platform=platform, **kwds)


async def create_connection(
    protocol_factory: Callable[[], _P],
    host: str | None = None,
    port: int | None = None,
    *,
    keepalive: KeepAlive,
    **kwds: Any,
) -> tuple[asyncio.Transport, _P]:
    """``loop.create_connection`` with ``keepalive`` applied before the protocol's ``connection_made``.

    Raises the ``OSError`` (with ``fd`` and ``option``) of a failed call after closing the transport.
    """
    policy = require_policy(keepalive)
    loop = asyncio.get_running_loop()
    errors: list[OSError] = []
    hook = _ApplyFirst(policy, lambda: True, errors)
    connect: Callable[..., Awaitable[tuple[asyncio.Transport, _P]]] = loop.create_connection
    transport, protocol = await connect(lambda: hook.wrap(protocol_factory()), host, port, **kwds)
    if errors:
        transport.abort()
        raise errors[0]
    return transport, protocol


async def open_connection(
    host: str | None = None,
    port: int | None = None,
    *,
    keepalive: KeepAlive,
    limit: int = _STREAM_LIMIT,
    **kwds: Any,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` whose socket carries ``keepalive``; same arguments and result."""
    policy = require_policy(keepalive)
    reader, writer = await asyncio.open_connection(host, port, limit=limit, **kwds)
    sock = writer.get_extra_info("socket")
    try:
        apply(sock, policy)
    except BaseException:
        writer.transport.abort()
        raise
    return reader, writer


async def retrofit(
    targets: Targets, policy: KeepAlive, *, threads: int | None = None, backend: Backend = "auto"
) -> RetrofitResult:
    """``ka.retrofit`` for a running event loop: the wait between the bridge and the policy (2 s
    on macOS and the BSDs, none elsewhere) is awaited, so the loop serves other tasks meanwhile.

    Same arguments, result and errors. A socket another task closes during the wait is left alone
    (``Route.LOST``), and so is whatever socket takes its number. Cancelled during the wait, the
    bridged sockets keep the bridge (probed every second, never dropped by it).
    """
    run = Retrofit(targets, policy, threads=threads, backend=backend)
    if run.start():
        await asyncio.sleep(run.remaining())
    return run.finish()
