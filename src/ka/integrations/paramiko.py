"""paramiko (checked against paramiko 5.1.0): a connected socket for ``sock=``. ::

    client = paramiko.SSHClient()
    ka.integrations.paramiko.connect(client, "127.0.0.1", policy, port=22, username="me")
    transport = ka.integrations.paramiko.transport("127.0.0.1", policy)     # paramiko.Transport

paramiko has no socket option of its own (``Transport.set_keepalive`` sends SSH-level
keepalive messages, not TCP probes) and leaves a socket it is given alone, so the policy, applied
before paramiko sees the socket, holds for the connection's life.
"""

from __future__ import annotations

from typing import Any

import paramiko

from ..policy import KeepAlive
from . import create_connection

__all__ = ["connect", "transport"]


def connect(
    client: paramiko.SSHClient,
    hostname: str,
    policy: KeepAlive,
    port: int = 22,
    *,
    timeout: float | None = None,
    **kwargs: Any,
) -> None:
    """``client.connect(hostname, port, sock=..., timeout=timeout, **kwargs)`` over a socket that
    carries ``policy``. ``timeout`` (seconds) bounds the TCP connect too. If ``connect`` raises,
    the socket is closed."""
    if "sock" in kwargs:
        raise TypeError("connect() makes the socket itself: do not pass sock=")
    sock = create_connection((hostname, port), policy, timeout)
    try:
        client.connect(hostname, port, sock=sock, timeout=timeout, **kwargs)
    except BaseException:
        sock.close()
        raise


def transport(
    hostname: str, policy: KeepAlive, port: int = 22, *, timeout: float | None = None
) -> paramiko.Transport:
    """A ``paramiko.Transport`` over a new socket to ``(hostname, port)`` carrying ``policy``;
    call ``start_client()`` on it as usual. The transport owns the socket."""
    sock = create_connection((hostname, port), policy, timeout)
    sock.settimeout(None)  # paramiko runs its own timeouts
    try:
        return paramiko.Transport(sock)
    except BaseException:
        sock.close()
        raise
