"""What the server glue modules share: one plan for several listeners, and per-accept application
through an asyncio protocol class (for servers that build their protocol from a class)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, TypeVar, cast

from .. import apply
from ..policy import KeepAlive
from ..server import INHERIT, PER_ACCEPT, ListenerPlan, Platform

__all__ = ["combined_plan", "keepalive_protocol"]

_P = TypeVar("_P", bound=asyncio.BaseProtocol)
logger = logging.getLogger("ka.integrations")


def combined_plan(plans: Sequence[ListenerPlan], policy: KeepAlive, platform: Platform) -> ListenerPlan:
    """One plan for a server's accepted sockets when it cannot tell which listener accepted one:
    per-accept if any listener is, else the pending connections of all of them."""
    mode = PER_ACCEPT if platform.mode == PER_ACCEPT or any(p.mode == PER_ACCEPT for p in plans) else INHERIT
    return ListenerPlan(None, policy, platform, mode, sum(p.pending for p in plans))


def keepalive_protocol(base: type[_P], plan: ListenerPlan) -> type[_P]:
    """A subclass of the protocol class ``base`` whose ``connection_made`` first gives the
    transport's socket the policy where ``plan`` says ka must (``plan.needs_apply()``).

    A failed call is logged (logger ``ka.integrations``) and the connection proceeds.
    """

    def connection_made(self: Any, transport: asyncio.BaseTransport) -> None:
        if plan.needs_apply():
            sock = transport.get_extra_info("socket")
            if sock is not None:  # None for transports without a socket: nothing to apply to
                try:
                    apply(sock, plan.policy)
                except OSError as exc:
                    logger.warning("ka could not apply %s to an accepted connection: %s", plan.policy, exc)
        base.connection_made(self, transport)

    name = f"KeepAlive{base.__name__}"
    # type() finds the most derived metaclass of ``base`` itself.
    return cast("type[_P]", type(name, (base,), {"connection_made": connection_made, "__module__": __name__}))
