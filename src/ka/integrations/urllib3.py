"""urllib3: pools whose connections carry a keepalive policy. ::

    http = ka.integrations.urllib3.pool_manager(policy)
    http.request("GET", "http://127.0.0.1:8080/")

or by hand: ``urllib3.PoolManager(socket_options=ka.integrations.urllib3.socket_options(policy))``.
"""

from __future__ import annotations

from typing import Any

import urllib3
from urllib3.connection import HTTPConnection

from ..policy import KeepAlive, require_policy
from . import SocketOption

__all__ = ["pool_manager", "socket_options"]


def socket_options(policy: KeepAlive) -> list[SocketOption]:
    """urllib3's defaults (``TCP_NODELAY``) followed by the policy's ``(level, option, value)`` triples.

    A ``socket_options`` argument replaces urllib3's defaults instead of adding to them, hence both.
    """
    defaults: list[SocketOption] = [
        (level, option, int(value))
        for level, option, value in HTTPConnection.default_socket_options
        if isinstance(value, int)
    ]
    return defaults + require_policy(policy).setsockopt_calls()


def pool_manager(policy: KeepAlive, **kwargs: Any) -> urllib3.PoolManager:
    """A ``urllib3.PoolManager`` (other arguments as its own) whose connections carry ``policy``."""
    return urllib3.PoolManager(socket_options=socket_options(policy), **kwargs)
