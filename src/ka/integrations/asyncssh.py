"""asyncssh (checked against asyncssh 2.24.1): ``connect(sock=...)`` over a socket carrying the policy. ::

    conn = await ka.integrations.asyncssh.connect("127.0.0.1", policy, port=22, username="me")

asyncssh sets SO_KEEPALIVE itself on every connection, from its ``tcp_keepalive`` option
(default True), also on a socket it is given; ``tcp_keepalive=False`` switches SO_KEEPALIVE OFF.
``connect`` passes ``tcp_keepalive`` as the policy says (a disabled policy gives False) and
refuses a ``tcp_keepalive`` argument that contradicts it. asyncssh's ``keepalive_interval`` is
SSH-level messages, not TCP probes. The idle, interval, count and user timeout asyncssh never
touches: ka sets them on the socket before asyncssh sees it.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import asyncssh

from ..policy import KeepAlive, require_policy
from . import with_policy

__all__ = ["connect", "open_socket"]


async def open_socket(host: str, port: int, policy: KeepAlive) -> socket.socket:
    """A non-blocking TCP socket connected to ``(host, port)`` (each address in turn), carrying
    ``policy`` from before ``connect()``. A failed apply closes the socket and raises at once."""
    policy = require_policy(policy)
    loop = asyncio.get_running_loop()
    errors: list[OSError] = []
    for family, type_, proto, _, address in await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        with_policy(sock, policy)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    if not errors:
        raise OSError(f"getaddrinfo gave no address for {host!r} port {port}")
    raise errors[-1]


async def connect(
    host: str, policy: KeepAlive, port: int = 22, **kwargs: Any
) -> asyncssh.SSHClientConnection:
    """``asyncssh.connect(host, port, sock=..., tcp_keepalive=policy.enabled, **kwargs)`` over a
    socket that carries ``policy``. If asyncssh fails to connect, the socket is closed."""
    policy = require_policy(policy)
    if "sock" in kwargs:
        raise TypeError("connect() makes the socket itself: do not pass sock=")
    if kwargs.setdefault("tcp_keepalive", policy.enabled) != policy.enabled:
        raise ValueError(
            f"tcp_keepalive={kwargs['tcp_keepalive']!r} contradicts {policy!r}: asyncssh sets "
            "SO_KEEPALIVE from tcp_keepalive on every connection"
        )
    sock = await open_socket(host, port, policy)
    try:
        return await asyncssh.connect(host, port, sock=sock, **kwargs)
    except BaseException:
        sock.close()
        raise
