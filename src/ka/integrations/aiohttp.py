"""aiohttp: a connector whose connections carry a keepalive policy (aiohttp 3.12+). ::

    async with aiohttp.ClientSession(connector=ka.integrations.aiohttp.connector(policy)) as session:
        ...

or ``aiohttp.TCPConnector(socket_factory=ka.integrations.aiohttp.socket_factory(policy))``.
"""

from __future__ import annotations

import inspect
import socket
from collections.abc import Callable
from typing import Any

import aiohttp

from .. import apply
from ..policy import KeepAlive, require_policy

__all__ = ["connector", "socket_factory"]

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
        sock = socket.socket(family, type_, proto)
        try:
            apply(sock, policy)
        except BaseException:
            sock.close()
            raise
        return sock

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
