"""requests: an adapter whose pooled connections carry a keepalive policy. ::

    session = ka.integrations.requests.session(policy)
    session.get("http://127.0.0.1:8080/")

or mount it yourself: ``session.mount("https://", KeepAliveAdapter(policy, pool_maxsize=32))``.
"""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter

from ..policy import KeepAlive
from .urllib3 import socket_options

__all__ = ["KeepAliveAdapter", "session"]


class KeepAliveAdapter(HTTPAdapter):
    """``requests.adapters.HTTPAdapter`` (other arguments as its own) giving every connection,
    direct or through a proxy, urllib3's default socket options plus ``policy``'s."""

    __attrs__: list[str] = [*HTTPAdapter.__attrs__, "keepalive"]  # noqa: RUF012 - requests' own pickling list

    def __init__(self, policy: KeepAlive, **kwargs: Any) -> None:
        self.keepalive = policy
        self._socket_options = socket_options(policy)  # validates before the pools exist
        super().__init__(**kwargs)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._socket_options = socket_options(state["keepalive"])
        super().__setstate__(state)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        pool_kwargs.setdefault("socket_options", self._socket_options)
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        proxy_kwargs.setdefault("socket_options", self._socket_options)
        return super().proxy_manager_for(proxy, **proxy_kwargs)


def session(policy: KeepAlive, **adapter_kwargs: Any) -> requests.Session:
    """A ``requests.Session`` with a ``KeepAliveAdapter`` mounted for ``http://`` and ``https://``."""
    sess = requests.Session()
    adapter = KeepAliveAdapter(policy, **adapter_kwargs)
    sess.mount("http://", adapter)
    sess.mount("https://", adapter)
    return sess
