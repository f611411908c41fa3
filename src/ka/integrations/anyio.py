"""AnyIO: TCP listeners whose accepted streams carry a keepalive policy (checked with AnyIO 4.16.0,
on its asyncio and trio backends, and 4.12.1 on Python 3.9).

    policy = "idle=60 interval=10 count=5"
    listener = await ka.integrations.anyio.create_tcp_listener(local_port=8000, policy=policy)
    await listener.serve(handler)

    listener = ka.integrations.anyio.keepalive_listener(await anyio.create_tcp_listener(), policy)

The same arguments as ``anyio.create_tcp_listener`` plus ``policy`` (a ``ka.KeepAlive``, a
string, or None for ``KA_POLICY`` from the environment) and ``platform`` (a ``ka.server.Platform``
to simulate another OS). Each socket listener (one per address; a ``MultiListener`` holds them)
is wrapped in a ``KeepAliveListener``: its listening socket, reached through
``SocketAttribute.raw_socket``, gets the policy when it is wrapped, right after AnyIO's
``listen()`` (on Linux connections queued by then are counted and get it as they are accepted);
in per-accept mode (macOS, Windows) ``accept()`` applies it to each stream's raw socket before
``serve`` hands the stream to your handler. A failed call is logged to the ``ka.integrations``
logger and the stream is served as it is.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any, Literal

import anyio
from anyio.abc import Listener, SocketAttribute, SocketListener, SocketStream, TaskGroup
from anyio.streams.stapled import MultiListener

from ..policy import KeepAlive, resolve_policy
from ..server import ListenerPlan, Platform, prepare_listener
from .serving import AcceptHook

__all__ = ["KeepAliveListener", "create_tcp_listener", "keepalive_listener"]

_log = logging.getLogger("ka.integrations")


class KeepAliveListener(Listener[SocketStream]):
    """An AnyIO socket listener whose accepted streams carry the policy of ``plan``.

    ``listener``: the wrapped ``anyio.abc.SocketListener``; ``plan``: its
    ``ka.server.ListenerPlan``. Extra attributes (``SocketAttribute.*``) are the wrapped one's.
    """

    def __init__(self, listener: SocketListener, plan: ListenerPlan) -> None:
        self.listener = listener
        self.plan = plan
        self._hook = AcceptHook([plan])

    async def accept(self) -> SocketStream:
        stream = await self.listener.accept()
        try:
            self._hook(stream.extra(SocketAttribute.raw_socket))
        except OSError as exc:
            _log.error("ka could not apply %r to an accepted connection: %s", self.plan.policy, exc)
        return stream

    async def serve(
        self, handler: Callable[[SocketStream], Any], task_group: TaskGroup | None = None
    ) -> None:
        async with AsyncExitStack() as stack:
            if task_group is None:
                task_group = await stack.enter_async_context(anyio.create_task_group())
            while True:
                stream = await self.accept()
                task_group.start_soon(handler, stream)

    async def aclose(self) -> None:
        await self.listener.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self.listener.extra_attributes


def keepalive_listener(
    listener: SocketListener | MultiListener[SocketStream],
    policy: KeepAlive | str | None = None,
    *,
    platform: Platform | None = None,
) -> MultiListener[SocketStream]:
    """Give each socket listener in ``listener`` the policy and wrap it; for listeners you made."""
    resolved = resolve_policy(policy)
    inner = listener.listeners if isinstance(listener, MultiListener) else [listener]
    wrapped: list[Listener[SocketStream]] = []
    for each in inner:
        if not isinstance(each, SocketListener):
            raise TypeError(
                f"listener must be an anyio SocketListener or a MultiListener of them, not "
                f"{type(each).__name__} {each!r}"
            )
        raw = each.extra(SocketAttribute.raw_socket)
        wrapped.append(KeepAliveListener(each, prepare_listener(raw, resolved, platform=platform)))
    return MultiListener(wrapped)


async def create_tcp_listener(
    *,
    local_host: str | None = None,
    local_port: int = 0,
    family: Literal[
        socket.AddressFamily.AF_UNSPEC, socket.AddressFamily.AF_INET, socket.AddressFamily.AF_INET6
    ] = (socket.AddressFamily.AF_UNSPEC),
    backlog: int = 65536,
    reuse_port: bool = False,
    policy: KeepAlive | str | None = None,
    platform: Platform | None = None,
) -> MultiListener[SocketStream]:
    """``anyio.create_tcp_listener`` whose connections carry ``policy``.

    The policy is checked (and ``KA_POLICY`` read) before any socket is opened; if applying it to
    a listener fails, the listeners opened here are closed before the ``OSError`` propagates.
    """
    resolved = resolve_policy(policy)
    opened = await anyio.create_tcp_listener(
        local_host=local_host, local_port=local_port, family=family, backlog=backlog, reuse_port=reuse_port
    )
    try:
        return keepalive_listener(opened, resolved, platform=platform)
    except BaseException:
        await opened.aclose()
        raise
