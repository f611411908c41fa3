"""httpx (and httpcore): transports whose connections carry a keepalive policy. ::

    client = httpx.Client(transport=ka.integrations.httpx.transport(policy))
    client = httpx.AsyncClient(transport=ka.integrations.httpx.async_transport(policy))

httpcore directly: ``httpcore.ConnectionPool(socket_options=ka.integrations.socket_options(policy))``.
"""

from __future__ import annotations

from typing import Any

import httpx

from ..policy import KeepAlive
from . import socket_options

__all__ = ["async_transport", "transport"]


def transport(policy: KeepAlive, **kwargs: Any) -> httpx.HTTPTransport:
    """An ``httpx.HTTPTransport`` (other arguments as its own) whose connections carry ``policy``.

    httpcore sets ``TCP_NODELAY`` itself, so only the policy's options are passed.
    """
    return httpx.HTTPTransport(socket_options=socket_options(policy), **kwargs)


def async_transport(policy: KeepAlive, **kwargs: Any) -> httpx.AsyncHTTPTransport:
    """An ``httpx.AsyncHTTPTransport`` (other arguments as its own) whose connections carry ``policy``."""
    return httpx.AsyncHTTPTransport(socket_options=socket_options(policy), **kwargs)
