"""trio: TCP listeners whose accepted streams carry a keepalive policy (checked with trio 0.35.0, and
0.31.0 on Python 3.9).

    await ka.integrations.trio.serve_tcp(handler, 8000, policy="idle=60 interval=10 count=5")

    listeners = await ka.integrations.trio.open_tcp_listeners(8000, policy=policy)
    await trio.serve_listeners(handler, listeners)

    listeners = ka.integrations.trio.keepalive_listeners(await trio.open_tcp_listeners(8000), policy)

The same arguments as trio's ``serve_tcp`` / ``open_tcp_listeners`` plus ``policy`` (a
``ka.KeepAlive``, a string, or None for ``KA_POLICY`` from the environment) and ``platform`` (a
``ka.server.Platform`` to simulate another OS). Each ``trio.SocketListener`` is wrapped in a
``KeepAliveListener`` (a ``trio.abc.Listener``; trio's own class is final): its listening socket
gets the policy when it is wrapped, right after trio's ``listen()`` (on Linux connections queued
by then are counted and get it as they are accepted), and in per-accept mode (macOS, Windows)
``accept()`` applies it to each stream's socket before returning the stream, so before your
handler runs. A failed call is logged to the ``ka.integrations`` logger and the stream is
returned as it is: one connection's error never stops the accept loop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from ..policy import KeepAlive, resolve_policy
from ..server import ListenerPlan, Platform, prepare_listener
from .serving import AcceptHook

__all__ = ["KeepAliveListener", "keepalive_listeners", "open_tcp_listeners", "serve_tcp"]

_log = logging.getLogger("ka.integrations")


class KeepAliveListener(trio.abc.Listener[trio.SocketStream]):
    """A ``trio.SocketListener`` whose accepted streams carry the policy of ``plan``.

    ``listener``: the wrapped ``trio.SocketListener``; ``socket``: its trio socket; ``plan``: the
    ``ka.server.ListenerPlan`` (``plan.mode`` is ``"inherit"`` or ``"per-accept"``).
    """

    def __init__(self, listener: trio.SocketListener, plan: ListenerPlan) -> None:
        self.listener = listener
        self.plan = plan
        self._hook = AcceptHook([plan])

    @property
    def socket(self) -> trio.socket.SocketType:
        return self.listener.socket

    async def accept(self) -> trio.SocketStream:
        stream = await self.listener.accept()
        try:
            self._hook(stream.socket)
        except OSError as exc:
            _log.error("ka could not apply %r to an accepted connection: %s", self.plan.policy, exc)
        return stream

    async def aclose(self) -> None:
        await self.listener.aclose()

    def __repr__(self) -> str:
        return f"<KeepAliveListener {self.plan.mode} {self.listener.socket!r}>"


def keepalive_listeners(
    listeners: Iterable[trio.SocketListener],
    policy: KeepAlive | str | None = None,
    *,
    platform: Platform | None = None,
) -> list[KeepAliveListener]:
    """Give each listener's socket the policy and wrap it; for listeners you opened yourself."""
    resolved = resolve_policy(policy)
    wrapped = []
    for listener in listeners:
        if not isinstance(listener, trio.SocketListener):
            raise TypeError(
                f"listeners must be trio.SocketListener objects, not {type(listener).__name__} {listener!r}"
            )
        wrapped.append(
            KeepAliveListener(listener, prepare_listener(listener.socket, resolved, platform=platform))
        )
    return wrapped


async def open_tcp_listeners(
    port: int,
    *,
    host: str | bytes | None = None,
    backlog: int | None = None,
    policy: KeepAlive | str | None = None,
    platform: Platform | None = None,
) -> list[KeepAliveListener]:
    """``trio.open_tcp_listeners`` whose listeners' streams carry ``policy``.

    The policy is checked (and ``KA_POLICY`` read) before any socket is opened; if applying it to
    a listener fails, every listener opened here is closed before the ``OSError`` propagates.
    """
    resolved = resolve_policy(policy)
    listeners = await trio.open_tcp_listeners(port, host=host, backlog=backlog)
    try:
        return keepalive_listeners(listeners, resolved, platform=platform)
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise


async def serve_tcp(
    handler: Callable[[trio.SocketStream], Awaitable[object]],
    port: int,
    *,
    host: str | bytes | None = None,
    backlog: int | None = None,
    handler_nursery: trio.Nursery | None = None,
    policy: KeepAlive | str | None = None,
    platform: Platform | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """``trio.serve_tcp`` whose connections carry ``policy``; ``task_status.started`` gets the
    ``KeepAliveListener`` list, as trio's gets its listeners."""
    listeners = await open_tcp_listeners(port, host=host, backlog=backlog, policy=policy, platform=platform)
    await trio.serve_listeners(handler, listeners, handler_nursery=handler_nursery, task_status=task_status)
