"""What the server glue modules share: per-accept application through an asyncio protocol class
(for servers that build their protocol from a class), for one listener or several."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar, cast

from ..server import ListenerPlan
from .serving import AcceptHook

__all__ = ["keepalive_protocol"]

_P = TypeVar("_P", bound=asyncio.BaseProtocol)
logger = logging.getLogger("ka.integrations")


def keepalive_protocol(base: type[_P], plan: ListenerPlan | AcceptHook) -> type[_P]:
    """A subclass of the protocol class ``base`` whose ``connection_made`` first gives the
    transport's socket the policy where ka must: ``plan`` for a server with one listener, or an
    ``AcceptHook`` over the plans of several (it finds the listener that accepted each socket, so
    connections queued on one listener are not counted against another).

    A failed call is logged (logger ``ka.integrations``) and the connection proceeds.
    """
    hook = plan if isinstance(plan, AcceptHook) else AcceptHook([plan])

    def connection_made(self: Any, transport: asyncio.BaseTransport) -> None:
        if hook.needed:
            sock = transport.get_extra_info("socket")
            if sock is not None:  # None for transports without a socket: nothing to apply to
                try:
                    hook(sock)
                except OSError as exc:
                    logger.warning("ka could not apply %s to an accepted connection: %s", hook.policy, exc)
        base.connection_made(self, transport)

    name = f"KeepAlive{base.__name__}"
    # type() finds the most derived metaclass of ``base`` itself.
    return cast("type[_P]", type(name, (base,), {"connection_made": connection_made, "__module__": __name__}))
