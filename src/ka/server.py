"""Listeners: give a listening socket a keepalive policy once.

Where the OS copies a listener's keepalive options into every accepted socket (Linux, FreeBSD),
ka sets the policy on the listener and does nothing per connection: mode ``"inherit"``. Where it
does not (macOS copies SO_KEEPALIVE, interval and count but not the idle; Windows copies
nothing), ka never touches the listener and applies the policy to each accepted socket instead:
mode ``"per-accept"``. ``ListenerPlan.accepted()`` does whichever is right, so one accept loop
works everywhere. ::

    plan = ka.server.prepare_listener(listener, policy)
    plan.mode                      # "inherit" or "per-accept"
    conn, addr = plan.accept()     # or plan.accepted(conn) after your own accept()
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from . import apply
from ._borrow import borrowed_call
from ._options import LISTENER_FACTS, LISTENERS, PLATFORM
from .policy import KeepAlive, require_policy
from .targets import Target

#: How a listener's policy reaches its accepted sockets: ``"inherit"`` or ``"per-accept"``.
Mode = Literal["inherit", "per-accept"]
#: The accepted sockets inherit the listener's options (Linux, FreeBSD): nothing runs per accept.
INHERIT: Mode = "inherit"
#: The listener is left alone and each accepted socket is given the policy (macOS, Windows).
PER_ACCEPT: Mode = "per-accept"

__all__ = [
    "FREEBSD",
    "INHERIT",
    "LINUX",
    "MACOS",
    "PER_ACCEPT",
    "WINDOWS",
    "KeepAliveServerMixin",
    "Listener",
    "ListenerPlan",
    "Mode",
    "Platform",
    "create_server",
    "prepare_listener",
]

_T = TypeVar("_T", bound=Target)
_S = TypeVar("_S", bound=socket.socket)
_Socket = socket.socket  # the mixin's ``socket`` attribute hides the module inside its class body

# Linux tcp_info of a listener: tcpi_state (byte 0) is TCP_LISTEN, tcpi_unacked (offset 24) the
# accept queue length (net/ipv4/tcp.c, tcp_get_info).
_TCP_LISTEN = 10
_TCP_INFO = getattr(socket, "TCP_INFO", 11)
_UNACKED_OFFSET = 24


@dataclass(frozen=True)
class Platform:
    """How an OS treats keepalive on listeners; inject one to simulate another OS.

    ``listener_inherits``: accepted sockets get the listener's keepalive options.
    ``listener_safe``: keepalive may be set on a listening socket at all.
    ``counts_queue``: the listener's accept queue length can be read (Linux ``TCP_INFO``).
    """

    name: str
    listener_inherits: bool
    listener_safe: bool
    counts_queue: bool = False

    def __post_init__(self) -> None:
        for field in ("listener_inherits", "listener_safe", "counts_queue"):
            value = getattr(self, field)
            if not isinstance(value, bool):
                raise TypeError(
                    f"Platform.{field} must be True or False, not {type(value).__name__} {value!r}"
                )

    @property
    def mode(self) -> Mode:
        """``"inherit"`` where the listener may carry the policy for its connections, else
        ``"per-accept"``."""
        return INHERIT if self.listener_inherits and self.listener_safe else PER_ACCEPT

    @classmethod
    def of(cls, name: str) -> Platform:
        """An OS's listener behaviour, from ka's one table of platform facts
        (``linux``, ``freebsd``, ``darwin``, ``windows``, ``other``)."""
        return cls(name, *LISTENER_FACTS[name])

    @classmethod
    def current(cls) -> Platform:
        """The platform ka runs on (what ``ka.capabilities()`` reports)."""
        return cls.of(PLATFORM)

    @classmethod
    def check(cls, platform: object) -> Platform:
        """``platform`` itself, or the current platform for None; a TypeError for anything else."""
        if platform is None:
            return cls.current()
        if not isinstance(platform, Platform):
            raise TypeError(
                f"platform must be a ka.server.Platform or None, not {type(platform).__name__} {platform!r}"
            )
        return platform


#: Linux: accepted sockets inherit the listener's keepalive options (``INHERIT``).
LINUX = Platform.of("linux")
#: FreeBSD: accepted sockets inherit them (``INHERIT``).
FREEBSD = Platform.of("freebsd")
#: macOS: accepted sockets do not inherit the idle time (``PER_ACCEPT``).
MACOS = Platform.of("darwin")
#: Windows: documents no inheritance of per-socket keepalive values, so never relied on (``PER_ACCEPT``).
WINDOWS = Platform.of("windows")


def _fileno(listener: object) -> int:
    method = getattr(listener, "fileno", None)
    if method is None:
        raise TypeError(
            "listener must be a socket or an object with fileno(), "
            f"not {type(listener).__name__} {listener!r}"
        )
    fd = method()
    if isinstance(fd, bool) or not isinstance(fd, int) or fd < 0:
        raise ValueError(f"listener.fileno() returned {fd!r}: the listener is closed or not a socket")
    return fd


def _queued(listener: Any) -> int:
    """Connections waiting in a Linux listener's accept queue; 0 for a socket not listening."""
    getsockopt = getattr(listener, "getsockopt", None)
    if getsockopt is None:  # a bare fileno(): borrowed, so neither closed nor made non-blocking
        info = borrowed_call(
            _fileno(listener),
            lambda sock: sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _UNACKED_OFFSET + 4),
        )
    else:
        info = getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _UNACKED_OFFSET + 4)
    if len(info) < _UNACKED_OFFSET + 4 or info[0] != _TCP_LISTEN:
        return 0
    return int(struct.unpack_from("=I", info, _UNACKED_OFFSET)[0])


class ListenerPlan:
    """How a listener's connections get a policy; made by ``prepare_listener``.

    ``mode``: ``"inherit"`` (the listener carries the policy, accepted sockets get it from the
    kernel) or ``"per-accept"`` (the listener is untouched, ``accepted()`` applies the policy).
    ``pending``: connections that were already in the accept queue when the policy was set on
    the listener; the kernel copied the listener's options when each was created, so
    ``accepted()`` applies the policy to that many more sockets, then to none (Linux counts them;
    elsewhere set the policy before ``listen()``).
    """

    __slots__ = ("_lock", "_pending", "listener", "mode", "platform", "policy")

    listener: Any
    policy: KeepAlive
    platform: Platform
    mode: Mode

    def __init__(
        self, listener: Any, policy: KeepAlive, platform: Platform, mode: Mode, pending: int
    ) -> None:
        self.listener = listener
        self.policy = policy
        self.platform = platform
        self.mode = mode
        self._pending = pending
        self._lock = threading.Lock()

    @property
    def inherits(self) -> bool:
        """True when accepted sockets get the policy from the listener (no call per accept)."""
        return self.mode == INHERIT

    @property
    def pending(self) -> int:
        """Accepted sockets still to be given the policy explicitly in inherit mode."""
        return self._pending

    def _take_pending(self) -> bool:
        if not self._pending:  # the common case: no lock, nothing to do
            return False
        with self._lock:
            if self._pending:
                self._pending -= 1
                return True
        return False

    def needs_apply(self) -> bool:
        """Whether the next accepted socket must be given the policy by ka (and counts it)."""
        return self.mode == PER_ACCEPT or self._take_pending()

    def accepted(self, sock: _T) -> _T:
        """Give one accepted socket the policy where the OS did not; returns ``sock``.

        Raises ``OSError`` (with ``fd`` and ``option``) when a call fails; the socket is left open.
        """
        if self.needs_apply():
            apply(sock, self.policy)
        return sock

    def accept(self) -> tuple[socket.socket, Any]:
        """``listener.accept()`` followed by ``accepted()``: (socket, address).

        The accepted socket is closed before an ``OSError`` from applying the policy propagates.
        """
        conn, address = self.listener.accept()
        return self.accepted_or_closed(conn), address

    def accepted_or_closed(self, conn: _S) -> _S:
        """``accepted()`` for a socket an accept wrapper has not handed out yet: on failure it is
        closed, then the error raised (the caller never sees the socket)."""
        try:
            return self.accepted(conn)
        except BaseException:
            conn.close()
            raise

    def __repr__(self) -> str:
        return f"<ListenerPlan {self.mode} on {self.platform.name}: {self.policy!r}, pending={self._pending}>"


def prepare_listener(listener: Any, policy: KeepAlive, *, platform: Platform | None = None) -> ListenerPlan:
    """Give a listening socket ``policy`` once; returns the plan for its accepted sockets.

    Inherit mode (Linux, FreeBSD): the policy is applied to the listener now (raises ``OSError``
    with ``fd`` and ``option`` on failure). Call it before ``listen()`` where you can: on Linux
    connections already queued are counted and get the policy in ``accepted()``; elsewhere they
    keep the values they were created with. Per-accept mode (macOS, Windows, or an injected
    ``platform`` saying so): no system call touches the listener.
    """
    policy = require_policy(policy)
    plat = Platform.check(platform)
    _fileno(listener)
    mode = plat.mode
    pending = 0
    if mode == INHERIT:
        apply(listener, policy)
        # Counted after applying: every connection created before that is in this count.
        if plat.counts_queue and LISTENERS.counts_queue:  # an injected LINUX on another OS: no TCP_INFO
            pending = _queued(listener)
    return ListenerPlan(listener, policy, plat, mode, pending)


class Listener(socket.socket):
    """A listening socket whose ``accept()`` returns sockets carrying its keepalive policy.

    Made by ``create_server``; ``plan`` says which path is in force (``listener.plan.mode``).
    """

    __slots__ = ("_plan",)

    _plan: ListenerPlan | None

    @property
    def plan(self) -> ListenerPlan:
        plan: ListenerPlan | None = getattr(self, "_plan", None)
        if plan is None:
            raise RuntimeError("This Listener has no keepalive plan: make it with ka.server.create_server().")
        return plan

    @property
    def mode(self) -> Mode:
        return self.plan.mode

    def accept(self) -> tuple[socket.socket, Any]:
        conn, address = super().accept()
        return self.plan.accepted_or_closed(conn), address


def create_server(
    address: tuple[Any, ...] | str | bytes,
    policy: KeepAlive,
    *,
    family: int = socket.AF_INET,
    backlog: int | None = None,
    reuse_port: bool = False,
    dualstack_ipv6: bool = False,
    platform: Platform | None = None,
) -> Listener:
    """``socket.create_server`` with a keepalive policy: a bound, listening ``Listener``.

    The policy is given to the socket after ``bind()`` and before ``listen()``, so no connection
    can arrive without it. ``listener.accept()`` returns sockets carrying the policy on every
    platform; ``listener.plan.mode`` says whether the kernel or ka put it there.
    """
    policy = require_policy(policy)
    plat = Platform.check(platform)
    if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port=True is not supported on this platform (no SO_REUSEPORT)")
    if dualstack_ipv6:
        if not socket.has_dualstack_ipv6():
            raise ValueError("dualstack_ipv6=True is not supported on this platform")
        if family != socket.AF_INET6:
            raise ValueError(f"dualstack_ipv6=True needs family=socket.AF_INET6, not {family!r}")
    sock = Listener(family, socket.SOCK_STREAM)
    try:
        # As socket.create_server: SO_REUSEADDR on POSIX only (on Windows it allows port theft).
        if os.name not in ("nt", "cygwin"):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if socket.has_ipv6 and family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dualstack_ipv6 else 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise OSError(
                exc.errno, f"{exc.strerror} (while attempting to bind on address {address!r})"
            ) from None
        sock._plan = prepare_listener(sock, policy, platform=plat)
        if backlog is None:
            sock.listen()
        else:
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class KeepAliveServerMixin:
    """For ``socketserver`` servers (``http.server.ThreadingHTTPServer``, ...): set ``keepalive``. ::

        class Server(ka.server.KeepAliveServerMixin, http.server.ThreadingHTTPServer):
            keepalive = ka.KeepAlive(60, 10, 5)

    The plan is made before ``listen()`` (in ``server_activate``) and every request's socket goes
    through ``plan.accepted()``. ``keepalive_platform`` may name a ``Platform`` to simulate.
    """

    keepalive: KeepAlive | None = None
    keepalive_platform: Platform | None = None
    keepalive_plan: ListenerPlan | None = None
    socket: _Socket

    def server_activate(self) -> None:
        if self.keepalive is None:
            raise TypeError(f"{type(self).__name__}.keepalive must be a ka.KeepAlive, not None")
        self.keepalive_plan = prepare_listener(self.socket, self.keepalive, platform=self.keepalive_platform)
        super().server_activate()  # type: ignore[misc]

    def get_request(self) -> tuple[_Socket, Any]:
        conn, address = super().get_request()  # type: ignore[misc]
        plan = self.keepalive_plan
        if plan is not None:
            plan.accepted_or_closed(conn)
        return conn, address
