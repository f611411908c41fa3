"""The probe's connections and what the kernel says about them (Linux).

Everything here is unprivileged: a non-blocking connect, keepalive options on our own sockets,
and ``TCP_INFO`` (``struct tcp_info``, linux/tcp.h), which any process may read on its own
sockets. A silent line's test is a keepalive probe armed after its wait: ``TCP_KEEPCNT`` and
``TCP_KEEPINTVL`` first, then ``SO_KEEPALIVE`` (which arms the timer at the current idle), then
``TCP_KEEPIDLE`` 1, which re-arms it with the time already idle counted
(``tcp_sock_set_keepidle_locked``), so the probe leaves at once. The answer shows in
``tcpi_last_ack_recv``; no answer to three probes makes the kernel drop the connection with
ETIMEDOUT; a reset gives ECONNRESET; a FIN reads as end of file.
"""

from __future__ import annotations

import contextlib
import errno
import math
import socket
import struct
from dataclasses import dataclass
from typing import NamedTuple

import ka

from .plan import KEEPALIVE_EVERY, Death, Role

__all__ = [
    "KEEPALIVE_POLICY",
    "TEST_PROBES",
    "Address",
    "Connection",
    "Gone",
    "TcpInfo",
    "parse_target",
    "resolve",
    "tcp_info",
]

# struct tcp_info up to tcpi_rttvar: 8 one-byte fields, then 17 u32 (rto ... rttvar).
_TCP_INFO = struct.Struct("=8B17I")
_TCP_INFO_SIZE = 104  # more than needed; the kernel copies min(len, sizeof)
TEST_PROBES = 3  # unanswered probes before the kernel gives a silent line up
KEEPALIVE_POLICY = ka.KeepAlive(idle=KEEPALIVE_EVERY, interval=1, count=3)
TCP_ESTABLISHED = 1
TCP_CLOSE_WAIT = 8
_RESET_ERRORS = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ECONNREFUSED}


class TcpInfo(NamedTuple):
    """The fields of ``struct tcp_info`` the probe reads: state, unanswered probes, milliseconds
    since the last data and the last ACK were received, and the smoothed round trip (seconds)."""

    state: int
    probes: int
    last_data_recv: float
    last_ack_recv: float
    rtt: float


def tcp_info(sock: socket.socket) -> TcpInfo:
    """``TCP_INFO`` of a TCP socket (Linux); the times in seconds."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    if len(raw) < _TCP_INFO.size:
        raise OSError(errno.EOPNOTSUPP, f"TCP_INFO returned {len(raw)} bytes, fewer than the probe reads")
    fields = _TCP_INFO.unpack_from(raw)
    # u32 fields start at index 8: rto, ato, snd_mss, rcv_mss, unacked, sacked, lost, retrans,
    # fackets, last_data_sent, last_ack_sent, last_data_recv, last_ack_recv, pmtu, rcv_ssthresh, rtt
    return TcpInfo(fields[0], fields[3], fields[19] / 1000, fields[20] / 1000, fields[23] / 1_000_000)


class Address(NamedTuple):
    """A resolved target: what ``socket.socket`` and ``connect`` take, and how to print it."""

    family: int
    sockaddr: tuple[object, ...]
    text: str


def parse_target(target: object) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT`` or a ``(host, port)`` pair as (host, port); a ValueError
    naming the value otherwise (before any system call)."""
    if isinstance(target, tuple) and len(target) == 2:
        host, port = target
    elif isinstance(target, str):
        text = target.strip()
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or not rest.startswith(":"):
                raise ValueError(f"target {target!r}: expected [IPV6]:PORT, such as [::1]:6379")
            port = rest[1:]
        else:
            host, sep, port = text.rpartition(":")
            if not sep or ":" in host:
                raise ValueError(
                    f"target {target!r}: expected HOST:PORT (an IPv6 address in brackets: [::1]:6379)"
                )
    else:
        raise TypeError(
            f"target must be 'HOST:PORT' or a (host, port) pair, not {type(target).__name__} {target!r}"
        )
    if not isinstance(host, str) or not host:
        raise ValueError(f"target {target!r}: the host is empty")
    try:
        number = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"target {target!r}: the port {port!r} is not a number") from None
    if isinstance(port, bool) or not 1 <= number <= 65535:
        raise ValueError(f"target {target!r}: the port must be 1-65535, not {port!r}")
    return host, number


def resolve(host: str, port: int) -> Address:
    """The first TCP address of ``host``; an OSError (``socket.gaierror``) naming it otherwise."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise socket.gaierror(exc.errno, f"cannot resolve {host!r}: {exc.strerror}") from None
    family, _, _, _, sockaddr = found[0]
    shown = f"[{sockaddr[0]}]:{port}" if family == socket.AF_INET6 else f"{sockaddr[0]}:{port}"
    return Address(family, tuple(sockaddr), shown)


@dataclass(frozen=True)
class Gone:
    """How a connection ended: the plan's word for it, and the errno behind it (0 for a FIN)."""

    death: Death
    errno: int


class Connection:
    """One line's socket: connecting, then watched; closed with a reset (SO_LINGER 0), so that
    nothing lingers in the kernel retransmitting a FIN into a path that forgot the flow."""

    __slots__ = ("address", "armed_at", "line", "payload_due", "role", "sock")

    def __init__(self, line: int, role: Role, address: Address) -> None:
        self.line: int = line
        self.role: Role = role
        self.address: Address = address
        self.armed_at: float | None = None
        self.payload_due: float = math.inf
        self.sock: socket.socket = socket.socket(address.family, socket.SOCK_STREAM)

    def start(self) -> None:
        """Begin the non-blocking connect."""
        self.sock.setblocking(False)
        err = self.sock.connect_ex(self.address.sockaddr)
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, f"connect to {self.address.text}: {errno.errorcode.get(err, err)}")

    def connect_error(self) -> int:
        """0 once connected, else the errno the connect failed with (read when writable)."""
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)

    def established(self) -> None:
        """Connected: keepalive lines get their probe every second, the others stay quiet."""
        if self.role is Role.KEEPALIVE:
            ka.apply(self.sock, KEEPALIVE_POLICY)

    def info(self) -> TcpInfo:
        return tcp_info(self.sock)

    def arm(self, now: float, interval: int) -> None:
        """Send a keepalive probe now, retried ``TEST_PROBES`` times ``interval`` s apart."""
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, TEST_PROBES)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)  # idle > 1 s: the probe leaves now
        self.armed_at = now

    def answered(self, now: float) -> float | None:
        """When the armed probe was answered (the runner's clock), or None while it is not."""
        if self.armed_at is None:
            return None
        heard = now - self.info().last_ack_recv
        # The line was quiet for seconds before: any ACK since just before arming answers the probe.
        return heard if heard > self.armed_at - 0.5 else None

    def disarm(self) -> None:
        """Quiet again: no probe until the next test."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
        self.armed_at = None

    def read(self) -> tuple[int, Gone | None]:
        """Drain what arrived: (bytes read, how the connection ended or None while it is open)."""
        total = 0
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return total, None
            except OSError as exc:
                return total, self.gone(exc.errno or 0)
            if not data:
                return total, Gone("fin", 0)
            total += len(data)

    @staticmethod
    def gone(err: int) -> Gone:
        if err in _RESET_ERRORS:
            return Gone("reset", err)
        return Gone("silent", err)  # ETIMEDOUT after unanswered probes, or an ICMP error

    def send(self, payload: bytes) -> None:
        """A heartbeat on a payload line; skipped when the far end does not read (buffer full)."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            self.sock.send(payload)

    def close(self) -> None:
        """Close with a reset where the socket still has a connection, at once either way."""
        # OSError: already closed by the kernel (reset, timeout): nothing lingers.
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
