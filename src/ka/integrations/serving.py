"""What the server glue modules share: a listening socket made with a policy, and one check per accept.

Each server module (``ka.integrations.websockets``, ``.aiohttp``, ``.tornado``, ``.twisted``,
``.trio``, ``.anyio``) builds on ``ka.server``: ``open_listener`` gives a plain listening socket
whose policy was set before ``listen()`` (inherit mode) or left off (per-accept mode), and
``AcceptHook`` is the per-connection step each server's own hook calls.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from typing import Any, NamedTuple

from .. import apply, read
from ..policy import KeepAlive, resolve_policy
from ..server import ListenerPlan, Platform, create_server, prepare_listener

__all__ = ["AcceptHook", "listen_address", "open_listener", "prepare_listeners"]

_WILDCARDS = ("0.0.0.0", "::")


class _Address(NamedTuple):
    family: int
    host: str
    port: int


def _local_address(sock: Any) -> _Address | None:
    """A socket's (family, host, port), or None for anything that has none to give."""
    getsockname = getattr(sock, "getsockname", None)
    family = getattr(sock, "family", None)
    if getsockname is None or family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        name = getsockname()
    except OSError:
        return None
    return _Address(int(family), str(name[0]).partition("%")[0], int(name[1]))


def _inherited(sock: Any, listener: Any) -> bool:
    """True when ``sock`` already has the listener's keepalive values (it was made after the
    listener got the policy); False when they differ or either cannot be read."""
    if listener is None:
        return False
    try:
        return bool(read(sock) == read(listener))
    except (OSError, TypeError, ValueError):
        return False


def listen_address(host: str | None, port: int) -> tuple[int, tuple[Any, ...]]:
    """(family, sockaddr) for a passive TCP socket on ``host`` (None or "" is every IPv4 address)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int from 0 to 65535, not {port!r}")
    if host is None or host == "":
        return socket.AF_INET, ("0.0.0.0", port)
    if not isinstance(host, str):
        raise TypeError(f"host must be a str or None, not {type(host).__name__} {host!r}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ValueError(f"host {host!r} does not resolve to an address to listen on: {exc}") from None
    family, _, _, _, sockaddr = infos[0]
    return int(family), sockaddr


def open_listener(
    host: str | None,
    port: int,
    policy: KeepAlive | str | None = None,
    *,
    platform: Platform | None = None,
    backlog: int | None = None,
    reuse_port: bool = False,
) -> tuple[socket.socket, ListenerPlan]:
    """A plain bound, listening TCP socket and its plan (``ka.server.create_server`` underneath).

    Inherit mode: the policy is on the socket before ``listen()``, so every connection gets it
    from the kernel. Per-accept mode: the socket is untouched and the caller's server must call
    the plan (``AcceptHook``) for each accepted socket. ``host`` None or ``""`` listens on every
    IPv4 address; a name listens on its first address. The socket is a ``socket.socket``, not a
    ``ka.server.Listener``, so an event loop that calls its ``accept()`` does not apply the
    policy a second time.
    """
    resolved = resolve_policy(policy)
    family, address = listen_address(host, port)
    listener = create_server(
        address, resolved, family=family, backlog=backlog, reuse_port=reuse_port, platform=platform
    )
    made = listener.plan
    try:
        sock = socket.socket(listener.family, listener.type, listener.proto, fileno=listener.fileno())
    except BaseException:
        listener.close()
        raise
    listener.detach()  # the fd now belongs to ``sock`` alone
    return sock, ListenerPlan(sock, made.policy, made.platform, made.mode, made.pending)


def prepare_listeners(
    listeners: Iterable[Any], policy: KeepAlive | str | None = None, *, platform: Platform | None = None
) -> list[ListenerPlan]:
    """``ka.server.prepare_listener`` for each listening socket of a server, with one policy."""
    resolved = resolve_policy(policy)
    return [prepare_listener(sock, resolved, platform=platform) for sock in listeners]


class AcceptHook:
    """The per-accept step of a server with one or more listeners sharing one policy.

    ``needed`` is False when no listener can need a call per accept (inherit mode with no
    connection queued before the policy was set): the server's hook is then not installed at all.
    ``__call__(sock)`` applies the policy when the plan of the listener that accepted ``sock``
    asks for it and returns True if it did; a failed call raises ``OSError`` (with ``fd`` and
    ``option``) and leaves the socket open.

    Which listener accepted a socket: the one whose address is the socket's local address (the
    same family and port, the same host or a wildcard one), so connections queued on one listener
    before the policy are counted against that listener only, whichever listener accepts first.
    Where several listeners share an address (``SO_REUSEPORT``) or a listener's address is not
    known, the socket itself decides: it gets the policy if its values differ from the
    listener's (which carries the policy), and only then is a queued connection counted.
    """

    __slots__ = ("_addresses", "plans", "policy")

    def __init__(self, plans: Iterable[ListenerPlan]) -> None:
        self.plans: list[ListenerPlan] = list(plans)
        if not self.plans:
            raise ValueError("AcceptHook needs at least one ListenerPlan")
        self.policy: KeepAlive = self.plans[0].policy
        self._addresses = [_local_address(plan.listener) for plan in self.plans]

    @property
    def needed(self) -> bool:
        return any(not plan.inherits or plan.pending for plan in self.plans)

    @property
    def mode(self) -> str:
        """The plans' mode (they share one platform): ``"inherit"`` or ``"per-accept"``."""
        return self.plans[0].mode

    def __call__(self, sock: Any) -> bool:
        if not self.needed:  # the common case: no system call at all
            return False
        candidates = self.plans if len(self.plans) == 1 else self._candidates(sock)
        if len(candidates) == 1:
            if candidates[0].needs_apply():
                apply(sock, self.policy)
                return True
            return False
        if any(not plan.inherits for plan in candidates):
            apply(sock, self.policy)
            return True
        queued = [plan for plan in candidates if plan.pending]
        if not queued or _inherited(sock, queued[0].listener):
            return False
        if queued[0].needs_apply():  # counts one of the connections queued before the policy
            apply(sock, self.policy)
            return True
        return False

    def _candidates(self, sock: Any) -> list[ListenerPlan]:
        """The plans of the listeners that may have accepted ``sock``: those with its exact local
        address, else those listening on its family's wildcard address and port, else those
        whose address is unknown."""
        local = _local_address(sock)
        if local is None:
            return self.plans
        exact, wildcard, unknown = [], [], []
        for plan, address in zip(self.plans, self._addresses):
            if address is None:
                unknown.append(plan)
            elif address.family == local.family and address.port == local.port:
                if address.host == local.host:
                    exact.append(plan)
                elif address.host in _WILDCARDS:
                    wildcard.append(plan)
        return exact or wildcard or unknown or self.plans

    def connection_made(self, transport: asyncio.BaseTransport, protocol: asyncio.BaseProtocol) -> None:
        """The step for an asyncio protocol's ``connection_made``, before the protocol's own: a
        failure goes to the running loop's exception handler and the connection proceeds."""
        sock = transport.get_extra_info("socket")
        if sock is None:  # not a socket transport: nothing to apply to
            return
        try:
            self(sock)
        except OSError as exc:
            asyncio.get_running_loop().call_exception_handler(
                {
                    "message": f"ka could not apply {self.policy!r} to an accepted connection",
                    "exception": exc,
                    "transport": transport,
                    "protocol": protocol,
                }
            )
