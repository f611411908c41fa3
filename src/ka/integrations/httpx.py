"""httpx and httpcore (checked against httpx 0.28.1, httpcore 1.0.9): every connection carries the policy. ::

    client = ka.integrations.httpx.client(policy)                      # httpx.Client(...) arguments
    client = ka.integrations.httpx.client(policy, proxy="socks5://127.0.0.1:1080")
    client = ka.integrations.httpx.async_client(policy)                # httpx.AsyncClient(...)
    client = httpx.Client(transport=ka.integrations.httpx.transport(policy, proxy=...))
    pool = httpcore.ConnectionPool(network_backend=ka.integrations.httpx.network_backend(policy))

The policy is applied by a network backend on every TCP connection httpcore opens: direct ones,
the connection to an HTTP proxy (forwarded ``http://`` requests and ``CONNECT`` tunnels) and to a
SOCKS5 proxy. ``socket_options`` alone does not reach proxies: httpcore 1.0 does not pass them on
to the proxy's connections and ``SOCKSProxy`` takes none.

httpx 0.28 takes no ``network_backend``: ``transport()`` and ``client()`` put the backend in front
of the backend of each transport's httpcore pool (the ``_pool._network_backend`` attribute, checked
when the transport is built, so an httpx release without it fails there, never silently).
``httpx.Client(proxy=..., transport=...)`` builds its proxy transport itself, without the policy,
and any ``transport=`` turns environment proxies off; ``client()`` keeps both working: it lets
httpx build its transports (``proxy=``, ``mounts=``, and with ``trust_env=True``, the default,
``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``/``NO_PROXY``) and then gives each of them the policy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar, Union

import httpcore
import httpx

from .. import apply
from ..policy import KeepAlive, require_policy

__all__ = [
    "KeepAliveAsyncBackend",
    "KeepAliveBackend",
    "async_client",
    "async_network_backend",
    "async_transport",
    "client",
    "network_backend",
    "transport",
]

# httpcore's SOCKET_OPTION, spelled out: httpcore exports it under no public name.
SocketOption = Union[
    tuple[int, int, int], tuple[int, int, Union[bytes, bytearray]], tuple[int, int, None, int]
]
SocketOptions = Union[Iterable[SocketOption], None]
_Transport = TypeVar("_Transport", httpx.HTTPTransport, httpx.AsyncHTTPTransport)


def _apply_to_stream(stream: Any, policy: KeepAlive) -> None:
    """Apply ``policy`` to the socket under a freshly connected httpcore stream."""
    sock = stream.get_extra_info("socket")
    if sock is None:
        raise httpcore.ConnectError(
            f"{type(stream).__name__} gives no socket (get_extra_info('socket') is None): "
            "cannot apply the keepalive policy"
        )
    try:
        apply(sock, policy)
    except OSError as exc:
        raise httpcore.ConnectError(f"could not apply {policy!r} to the new connection: {exc}") from exc


class KeepAliveBackend(httpcore.NetworkBackend):
    """An httpcore network backend: ``backend`` (default ``httpcore.SyncBackend()``) connects, then
    ``policy`` is applied to the new TCP socket. A failed apply closes the connection and raises
    ``httpcore.ConnectError`` (``httpx.ConnectError`` through httpx) chained to the ``OSError``.
    Unix-socket connections (``uds=``) are passed through unchanged."""

    def __init__(self, policy: KeepAlive, backend: httpcore.NetworkBackend | None = None) -> None:
        self.policy: KeepAlive = require_policy(policy)
        self.backend: httpcore.NetworkBackend = httpcore.SyncBackend() if backend is None else backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: SocketOptions = None,
    ) -> httpcore.NetworkStream:
        stream = self.backend.connect_tcp(host, port, timeout, local_address, socket_options)
        try:
            _apply_to_stream(stream, self.policy)
        except BaseException:
            stream.close()
            raise
        return stream

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: SocketOptions = None
    ) -> httpcore.NetworkStream:
        return self.backend.connect_unix_socket(path, timeout, socket_options)

    def sleep(self, seconds: float) -> None:
        self.backend.sleep(seconds)


class KeepAliveAsyncBackend(httpcore.AsyncNetworkBackend):
    """The asyncio/trio twin of ``KeepAliveBackend``; ``backend`` defaults to
    ``httpcore.AnyIOBackend()`` under asyncio and ``httpcore.TrioBackend()`` under trio (the
    choice httpcore's own ``AutoBackend`` makes)."""

    def __init__(self, policy: KeepAlive, backend: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy: KeepAlive = require_policy(policy)
        if backend is None:
            # The default of httpcore's async pools; exported by no public name in httpcore 1.0.
            from httpcore._backends.auto import AutoBackend

            backend = AutoBackend()
        self.backend: httpcore.AsyncNetworkBackend = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: SocketOptions = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self.backend.connect_tcp(host, port, timeout, local_address, socket_options)
        try:
            _apply_to_stream(stream, self.policy)
        except BaseException:
            await stream.aclose()
            raise
        return stream

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: SocketOptions = None
    ) -> httpcore.AsyncNetworkStream:
        return await self.backend.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.backend.sleep(seconds)


def network_backend(policy: KeepAlive) -> KeepAliveBackend:
    """``httpcore.ConnectionPool/HTTPProxy/SOCKSProxy(network_backend=network_backend(policy))``."""
    return KeepAliveBackend(policy)


def async_network_backend(policy: KeepAlive) -> KeepAliveAsyncBackend:
    """``httpcore.AsyncConnectionPool/AsyncHTTPProxy/AsyncSOCKSProxy(network_backend=...)``."""
    return KeepAliveAsyncBackend(policy)


def _install(target: _Transport, policy: KeepAlive) -> _Transport:
    """Put a policy backend in front of the backend of ``target``'s httpcore pool."""
    pool: Any = getattr(target, "_pool", None)
    inner: Any = getattr(pool, "_network_backend", None)
    if inner is None:
        raise RuntimeError(
            f"httpx {httpx.__version__} / httpcore {httpcore.__version__}: {type(target).__name__} has no "
            "_pool._network_backend, so ka cannot give its connections a keepalive policy "
            "(checked against httpx 0.28 and httpcore 1.0)"
        )
    if isinstance(inner, (KeepAliveBackend, KeepAliveAsyncBackend)):
        inner = inner.backend  # a second policy replaces the first instead of stacking
    if isinstance(target, httpx.AsyncHTTPTransport):
        pool._network_backend = KeepAliveAsyncBackend(policy, inner)
    else:
        pool._network_backend = KeepAliveBackend(policy, inner)
    return target


def transport(policy: KeepAlive, **kwargs: Any) -> httpx.HTTPTransport:
    """An ``httpx.HTTPTransport`` (arguments as its own: ``proxy=`` an ``http://``, ``https://`` or
    ``socks5://`` URL, ``verify``, ``limits``, ...) whose every connection carries ``policy``."""
    return _install(httpx.HTTPTransport(**kwargs), require_policy(policy))


def async_transport(policy: KeepAlive, **kwargs: Any) -> httpx.AsyncHTTPTransport:
    """An ``httpx.AsyncHTTPTransport`` (arguments as its own) whose every connection carries ``policy``."""
    return _install(httpx.AsyncHTTPTransport(**kwargs), require_policy(policy))


def _install_client(client: httpx.Client | httpx.AsyncClient, policy: KeepAlive) -> None:
    transports: list[Any] = [client._transport, *client._mounts.values()]
    kind: type[Any] = (
        httpx.AsyncHTTPTransport if isinstance(client, httpx.AsyncClient) else httpx.HTTPTransport
    )
    for item in transports:
        if item is None:  # a NO_PROXY pattern: requests go through client._transport
            continue
        if not isinstance(item, kind):
            raise TypeError(
                f"cannot give {type(item).__name__} {item!r} a keepalive policy: ka can only reach the "
                f"connections of an httpx.{kind.__name__}"
            )
        _install(item, policy)


def client(policy: KeepAlive, **kwargs: Any) -> httpx.Client:
    """An ``httpx.Client`` (arguments as its own) whose every transport carries ``policy``.

    Proxies keep working as httpx handles them: ``proxy=``, ``mounts=`` of ``httpx.HTTPTransport``
    objects, and, with ``trust_env=True`` and no ``transport=``, the environment's proxies. A
    mounted transport of another kind is a ``TypeError`` (ka cannot reach its sockets).
    """
    policy = require_policy(policy)
    built = httpx.Client(**kwargs)
    try:
        _install_client(built, policy)
    except BaseException:
        built.close()
        raise
    return built


def async_client(policy: KeepAlive, **kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` (arguments as its own) whose every transport carries ``policy``;
    see ``client``. Nothing is connected until the first request, so no ``await`` is needed."""
    policy = require_policy(policy)
    built = httpx.AsyncClient(**kwargs)
    _install_client(built, policy)  # nothing opened yet: a refused mount leaves nothing to close
    return built
