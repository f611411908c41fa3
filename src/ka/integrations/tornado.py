"""tornado: servers whose accepted connections carry a keepalive policy (checked with tornado 6.6.1,
and 6.5.10 on Python 3.9). ::

    server = ka.integrations.tornado.listen(app, 8888, policy="idle=60 interval=10 count=5")

    # or any TCPServer of yours, however it gets its sockets (listen, bind + start, add_sockets)
    class EchoServer(ka.integrations.tornado.KeepAliveMixin, tornado.tcpserver.TCPServer):
        keepalive = "idle=60 interval=10 count=5"   # None (the default): KA_POLICY

    sockets = tornado.netutil.bind_sockets(8888)
    tornado.process.fork_processes(0)
    server = ka.integrations.tornado.HTTPServer(app, keepalive=policy)
    server.add_sockets(sockets)

Every way tornado starts a server ends in ``TCPServer.add_sockets``, where the mixin gives each
listening socket the policy (``ka.server.prepare_listener``); every accepted connection goes
through ``handle_stream`` (the mixin's, or the one your subclass defines, which the mixin wraps),
where the policy is applied where the OS does not copy it from the listener (macOS, Windows),
before anything reads from the stream. ``bind_sockets`` has already
called ``listen()``: on Linux the connections queued by then are counted and get the policy as they
are accepted; on FreeBSD they keep the values they were created with. A failed call is logged to
``tornado.application`` and the connection proceeds.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import tornado.httpserver
import tornado.web
from tornado.iostream import IOStream
from tornado.log import app_log

from ..policy import KeepAlive
from ..server import ListenerPlan, Platform
from .serving import AcceptHook, prepare_listeners

__all__ = ["HTTPServer", "KeepAliveMixin", "listen"]


_APPLIED = "_ka_keepalive_applied"  # set on a stream once ka handled it


def _keepalive_first(method: Callable[..., Any]) -> Callable[..., Any]:
    """A subclass's own ``handle_stream`` preceded by the policy step (once per stream)."""

    @functools.wraps(method)
    def handle_stream(self: KeepAliveMixin, stream: IOStream, address: tuple[Any, ...]) -> Any:
        self.keepalive_accepted(stream, address)
        return method(self, stream, address)

    setattr(handle_stream, _APPLIED, True)
    return handle_stream


class KeepAliveMixin:
    """For ``tornado.tcpserver.TCPServer`` subclasses: put it first among the bases.

    ``keepalive``: a ``ka.KeepAlive``, a string (``"idle=60 interval=10 count=5"``) or None for
    ``KA_POLICY`` from the environment, read when sockets are added. ``keepalive_platform``: a
    ``ka.server.Platform`` to simulate another OS. ``keepalive_plans``: one plan per listening
    socket added so far.

    A ``TCPServer`` subclass implements ``handle_stream`` itself, which would hide the mixin's:
    so a ``handle_stream`` defined in any subclass is wrapped when the class is made, and the
    policy step runs first (once per stream, however many of them call ``super()``).
    """

    keepalive: KeepAlive | str | None = None
    keepalive_platform: Platform | None = None
    keepalive_plans: list[ListenerPlan]
    _keepalive_hook: AcceptHook | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("handle_stream")
        if own is not None and not getattr(own, _APPLIED, False):
            cls.handle_stream = _keepalive_first(own)  # type: ignore[method-assign]

    def add_sockets(self, sockets: Iterable[Any]) -> None:
        sockets = list(sockets)
        made = prepare_listeners(sockets, self.keepalive, platform=self.keepalive_platform)
        self.keepalive_plans = [*getattr(self, "keepalive_plans", []), *made]
        hook = AcceptHook(self.keepalive_plans)
        self._keepalive_hook = hook if hook.needed else None
        super().add_sockets(sockets)  # type: ignore[misc]

    def keepalive_accepted(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        """Give the stream's socket the policy where the plan says so; once per stream."""
        hook = self._keepalive_hook
        if hook is None or getattr(stream, _APPLIED, False):
            return
        setattr(stream, _APPLIED, True)
        try:
            hook(stream.socket)
        except OSError as exc:
            app_log.error("ka could not apply %r to the connection from %r: %s", hook.policy, address, exc)

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> Awaitable[None] | None:
        self.keepalive_accepted(stream, address)
        result: Awaitable[None] | None = super().handle_stream(stream, address)  # type: ignore[misc]
        return result


class HTTPServer(KeepAliveMixin, tornado.httpserver.HTTPServer):  # type: ignore[misc]
    """``tornado.httpserver.HTTPServer`` with ``keepalive=`` and ``keepalive_platform=`` arguments."""

    def initialize(
        self,
        *args: Any,
        keepalive: KeepAlive | str | None = None,
        keepalive_platform: Platform | None = None,
        **kwargs: Any,
    ) -> None:
        self.keepalive = keepalive
        self.keepalive_platform = keepalive_platform
        super().initialize(*args, **kwargs)


def listen(
    app: tornado.web.Application,
    port: int,
    address: str | None = None,
    *,
    policy: KeepAlive | str | None = None,
    platform: Platform | None = None,
    **kwargs: Any,
) -> HTTPServer:
    """``app.listen(port, address, **kwargs)`` whose connections carry ``policy``; returns the server.

    ``kwargs`` are ``Application.listen``'s: ``family``, ``backlog``, ``flags``, ``reuse_port``
    go to ``bind_sockets``, the rest to the ``HTTPServer``.
    """
    bind = {key: kwargs.pop(key) for key in ("family", "backlog", "flags", "reuse_port") if key in kwargs}
    server = HTTPServer(app, keepalive=policy, keepalive_platform=platform, **kwargs)
    server.listen(port, address=address, **bind)
    return server
