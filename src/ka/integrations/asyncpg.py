"""asyncpg (checked against asyncpg 0.32.0): a ``connection_class`` whose socket carries the policy. ::

    conn = await asyncpg.connect(dsn, connection_class=ka.integrations.asyncpg.connection_class(policy))
    pool = await asyncpg.create_pool(dsn, connection_class=ka.integrations.asyncpg.connection_class(policy))
    engine = sqlalchemy.ext.asyncio.create_async_engine(
        "postgresql+asyncpg://...", connect_args={"connection_class": connection_class(policy)})

asyncpg has no keepalive option of its own and no socket hook before connecting: it builds the
``connection_class`` once the server has accepted the login, so the policy is applied to the
transport's socket then, and from that moment on holds for the connection's whole life. The
server's end of the same connection: ``server_settings=ka.integrations.postgres_server_settings(policy)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg

from .. import apply
from ..policy import KeepAlive, require_policy

__all__ = ["KeepAliveConnection", "connection_class"]


if TYPE_CHECKING:
    # asyncpg ships no type information: for type checkers, the part of asyncpg.Connection this
    # subclass uses (so its own type, and connection_class's, are known).
    class _Connection:
        def __init__(self, protocol: Any, transport: Any, loop: Any, addr: Any, *args: Any) -> None: ...
        def terminate(self) -> None: ...

else:
    _Connection = asyncpg.Connection


class KeepAliveConnection(_Connection):
    """An ``asyncpg.Connection`` that applies its class's ``keepalive`` policy to its TCP socket.

    Use ``connection_class(policy)`` for a subclass carrying a policy. If applying fails, the
    connection is terminated (asyncpg does not close it when the class's constructor raises) and the
    ``OSError`` (with ``fd`` and ``option``) propagates from ``connect``/``create_pool``.
    Unix-socket connections are left alone: keepalive is a TCP matter.
    """

    keepalive: KeepAlive | None = None

    def __init__(self, protocol: Any, transport: Any, loop: Any, addr: Any, *args: Any) -> None:
        super().__init__(protocol, transport, loop, addr, *args)
        policy = type(self).keepalive
        try:
            if policy is None:
                raise TypeError(
                    "KeepAliveConnection has no policy: pass connection_class=ka.integrations.asyncpg."
                    "connection_class(policy), not the base class"
                )
            if isinstance(addr, str):  # a Unix socket path
                return
            sock = transport.get_extra_info("socket")
            if sock is None:
                raise RuntimeError(f"the asyncpg transport {transport!r} gives no socket")
            apply(sock, policy)
        except BaseException:
            self.terminate()  # asyncpg would leave the transport open: the constructor raised
            raise


def connection_class(policy: KeepAlive) -> type[KeepAliveConnection]:
    """A ``KeepAliveConnection`` subclass carrying ``policy``, for asyncpg's ``connection_class``."""
    policy = require_policy(policy)
    return type("KeepAliveConnection", (KeepAliveConnection,), {"keepalive": policy})
