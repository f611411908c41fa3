"""Twisted: TCP ports whose accepted connections carry a keepalive policy (checked with Twisted 26.10.0,
and 26.4.0 on Python 3.9).

    port = ka.integrations.twisted.listen_tcp(8000, factory, policy="idle=60 interval=10 count=5")

    port = reactor.listenTCP(8000, factory)               # a port you made yourself
    ka.integrations.twisted.keepalive_port(port, policy)

``listen_tcp`` takes ``reactor.listenTCP``'s arguments: ka makes the listening socket with the
policy set before ``listen()`` and hands it to ``reactor.adoptStreamPort`` (which duplicates the
descriptor; ka closes its own). ``keepalive_port`` gives the policy to the socket of a port that is
already listening (``port.socket``); on Linux the connections queued by then are counted and get it
as they are accepted.

Linux, FreeBSD ("inherit"): accepted sockets get the policy from the listener, and the factory is
the one you gave. macOS, Windows ("per-accept", or ``platform=`` saying so): the factory is wrapped
in a ``twisted.protocols.policies.WrappingFactory`` whose protocol wrapper applies the policy to
``transport.getHandle()`` in ``makeConnection``, before your protocol's ``connectionMade``; a failed
call is logged and the connection proceeds. ``policy`` is a ``ka.KeepAlive``, a string, or None for
``KA_POLICY`` from the environment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IAddress, IListeningPort, IProtocolFactory, ITransport
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from ..policy import KeepAlive
from ..server import ListenerPlan, Platform
from .serving import AcceptHook, open_listener, prepare_listeners

__all__ = ["KeepAliveFactory", "keepalive_port", "listen_tcp"]

_log = Logger()


class _KeepAliveProtocol(ProtocolWrapper):
    factory: KeepAliveFactory

    def makeConnection(self, transport: ITransport) -> None:
        hook = self.factory.hook
        handle = getattr(transport, "getHandle", None)
        if handle is not None:
            try:
                hook(handle())
            except OSError as exc:
                _log.error(
                    "ka could not apply {policy!r} to an accepted connection: {error}",
                    policy=hook.policy,
                    error=exc,
                )
        super().makeConnection(transport)  # type: ignore[no-untyped-call]


if TYPE_CHECKING:
    _WrappingFactory = WrappingFactory[_KeepAliveProtocol]
else:  # the subscript is for the type checker: not every Twisted release allows it at run time
    _WrappingFactory = WrappingFactory


class KeepAliveFactory(_WrappingFactory):
    """Wraps a server factory so each connection's socket gets the policy of ``hook`` first."""

    protocol: Callable[..., _KeepAliveProtocol] = _KeepAliveProtocol

    def __init__(self, wrapped_factory: IProtocolFactory, hook: AcceptHook) -> None:
        super().__init__(wrapped_factory)  # type: ignore[no-untyped-call]
        self.hook = hook

    def buildProtocol(self, addr: IAddress | None) -> Any:
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:  # the factory refused the connection: the port closes it
            return None
        return self.protocol(self, wrapped)


def _reactor(reactor: Any) -> Any:
    if reactor is None:
        from twisted.internet import reactor as installed  # the global reactor, as listenTCP uses

        return installed
    return reactor


def listen_tcp(
    port: int,
    factory: IProtocolFactory,
    backlog: int = 50,
    interface: str = "",
    *,
    policy: KeepAlive | str | None = None,
    platform: Platform | None = None,
    reactor: Any = None,
) -> IListeningPort:
    """``reactor.listenTCP(port, factory, backlog, interface)`` with a keepalive policy.

    ``interface`` ``""`` listens on every IPv4 address, as ``listenTCP`` does. ``reactor``
    defaults to the installed global reactor. The returned port's ``keepalive_plan`` is the
    listener's ``ka.server.ListenerPlan``.
    """
    sock, plan = open_listener(interface or None, port, policy, platform=platform, backlog=backlog)
    try:
        hook = AcceptHook([plan])
        sock.setblocking(False)  # adoptStreamPort requires a non-blocking socket
        served = KeepAliveFactory(factory, hook) if hook.needed else factory
        listening = _reactor(reactor).adoptStreamPort(sock.fileno(), sock.family, served)
    finally:
        sock.close()  # adoptStreamPort works on its own duplicate of the descriptor
    plan.listener = listening.socket
    listening.keepalive_plan = plan
    return listening  # type: ignore[no-any-return]


def keepalive_port(
    port: IListeningPort, policy: KeepAlive | str | None = None, *, platform: Platform | None = None
) -> ListenerPlan:
    """Give a listening TCP port (from ``reactor.listenTCP``) the policy; returns its plan.

    Where the plan needs a call per accept, the port's ``factory`` is replaced by a
    ``KeepAliveFactory`` around it, which takes effect from the next accepted connection.
    """
    sock = getattr(port, "socket", None)
    if sock is None or not hasattr(port, "factory"):
        raise TypeError(
            f"port must be a listening TCP port from reactor.listenTCP (with .socket and .factory), "
            f"not {type(port).__name__} {port!r}"
        )
    (plan,) = prepare_listeners([sock], policy, platform=platform)
    hook = AcceptHook([plan])
    if hook.needed:
        port.factory = KeepAliveFactory(port.factory, hook)
    return plan
