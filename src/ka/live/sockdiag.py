"""The TCP sockets of this network namespace through the kernel's socket-diagnostics netlink
interface (``NETLINK_SOCK_DIAG``, ``inet_diag_req_v2``), as ``/proc/net/tcp`` lists them.

One dump per address family answers with an ``inet_diag_msg`` per socket: addresses, state,
the running timer (``idiag_timer``: the codes of /proc/net/tcp's ``tr`` field; ``idiag_expires``
in milliseconds), uid and inode; ``INET_DIAG_INFO`` adds ``struct tcp_info``, whose
``tcpi_retransmits`` and ``tcpi_probes`` are /proc's ``retrnsmt`` and ``timeout`` columns. The
states wanted are filtered in the kernel. It carries no keepalive option values: those are read
from the sockets themselves (``ka.live.read``).

``tcp_sockets`` lists the cgroup each socket belongs to as well (``INET_DIAG_CGROUP_ID``, Linux
5.7+, what ``ss --cgroup`` shows): the cgroup of the process that created it, when it did, which
/proc has no field for (``ka guard`` finds listeners its program does not cover with it).

A netlink socket speaks for the network namespace it was made in: this module lists the
caller's own. Another namespace's table comes from ``/proc/PID/net/tcp`` (``procfs``).
Pure Python over the socket module (``AF_NETLINK``); Linux only.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterable
from typing import Any, NamedTuple

from .model import Endpoint, TcpEntry, Timer
from .procfs import TCP_STATES, TIMER_NAMES

NETLINK_SOCK_DIAG = 4  # linux/netlink.h
SOCK_DIAG_BY_FAMILY = 20  # linux/sock_diag.h
NLM_F_REQUEST = 0x01
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_INFO = 2  # linux/inet_diag.h: the attribute carrying struct tcp_info
INET_DIAG_CGROUP_ID = 21  # linux/inet_diag.h: the socket's cgroup v2 id (u64), sent unasked

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
# inet_diag_req_v2: family, protocol, extensions, pad, states, then inet_diag_sockid (48 bytes,
# left zero: a dump matches every socket).
_REQUEST = struct.Struct("=BBBxI48x")
# inet_diag_msg: family, state, timer, retrans, sockid (ports big-endian, two 16-byte addresses,
# interface, cookie), expires (ms), receive and send queue, uid, inode.
_MESSAGE = struct.Struct("=BBBB2H16s16s12xIIIII")
_ATTRIBUTE = struct.Struct("=HH")  # rtattr: length, type
_INODE_OFFSET = _HEADER.size + 68  # idiag_inode within a message, for the pre-filter
_RECEIVE_BUFFER = 1 << 20  # larger reads let the kernel fill larger dump messages

# Sockets no process holds (inode 0): TIME_WAIT and request sockets are left out in the kernel.
_NOT_HELD = frozenset({"time-wait", "new-syn-recv"})
STATE_NUMBERS = {name: number for number, name in TCP_STATES.items()}


def states_mask(states: Iterable[str] | None) -> int:
    """The ``idiag_states`` bit mask for these state names (None: every state a process holds);
    ``ValueError`` naming an unknown one."""
    names = set(TCP_STATES.values()) - _NOT_HELD if states is None else set(states) - _NOT_HELD
    unknown = sorted(names - set(STATE_NUMBERS))
    if unknown:
        raise ValueError(f"unknown TCP states {unknown}: expected names from {sorted(STATE_NUMBERS)}")
    mask = 0
    for name in names:
        mask |= 1 << STATE_NUMBERS[name]
    return mask


_HEAD = struct.Struct("=IHxxI")  # nlmsghdr's length, type and sequence
_U32 = struct.Struct("=I")
_ERROR_CODE = struct.Struct("=i")
_NO_TIMER = Timer("none", 0.0, 0, 0)
_FAMILY_NAMES = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}
_ntohs = socket.ntohs


class _Parser:
    """Turns inet_diag_msg messages into ``TcpEntry``; a table holds few distinct addresses, so
    each is printed once (by raw bytes, per family)."""

    def __init__(self, with_info: bool) -> None:
        self.with_info = with_info
        self.addresses: dict[int, dict[bytes, str]] = {socket.AF_INET: {}, socket.AF_INET6: {}}

    def address(self, family: int, raw: bytes) -> str:
        known = self.addresses[family]
        text = known.get(raw)
        if text is None:
            text = known[raw] = socket.inet_ntop(family, raw[:4] if family == socket.AF_INET else raw)
        return text

    def entry(self, buffer: bytearray, offset: int, length: int) -> TcpEntry:
        (family, state, code, retrans, sport, dport, src, dst, expires, _rq, _wq, uid, inode) = (
            _MESSAGE.unpack_from(buffer, offset + _HEADER.size)
        )
        if code == 0:
            timer = _NO_TIMER
        else:
            probes = retransmits = 0
            info = _tcp_info(buffer, offset, length) if self.with_info else None
            if info is not None:
                retransmits, probes = info
            elif code == 1:
                retransmits = retrans  # idiag_retrans holds icsk_retransmits for the retransmit timer
            else:
                probes = retrans  # and icsk_probes_out for the keepalive and zero-window timers
            timer = Timer(TIMER_NAMES.get(code, f"timer-{code}"), expires / 1000, probes, retransmits)
        known = self.addresses[family]
        local = known.get(src) or self.address(family, src)
        remote = known.get(dst) or self.address(family, dst)
        return TcpEntry(
            inode,
            _FAMILY_NAMES[family],
            Endpoint(local, _ntohs(sport)),
            Endpoint(remote, _ntohs(dport)),
            TCP_STATES.get(state) or f"state-{state}",
            timer,
            uid,
        )


class DiagSocket(NamedTuple):
    """One TCP socket as sock_diag reports it, with the cgroup it belongs to (None on kernels
    before 5.7, which do not report it)."""

    inode: int
    family: str
    state: str
    local: Endpoint
    remote: Endpoint
    cgroup_id: int | None


class _CgroupParser(_Parser):
    """Turns inet_diag_msg messages into ``DiagSocket``."""

    def entry(self, buffer: bytearray, offset: int, length: int) -> Any:
        (family, state, _code, _retrans, sport, dport, src, dst, *_rest, inode) = _MESSAGE.unpack_from(
            buffer, offset + _HEADER.size
        )
        return DiagSocket(
            inode,
            _FAMILY_NAMES[family],
            TCP_STATES.get(state) or f"state-{state}",
            Endpoint(self.address(family, src), _ntohs(sport)),
            Endpoint(self.address(family, dst), _ntohs(dport)),
            _cgroup_id(buffer, offset, length),
        )


def _attribute(buffer: bytearray, offset: int, length: int, wanted: int) -> int | None:
    """Where the payload of the message's attribute ``wanted`` starts, if it is there."""
    at = offset + _HEADER.size + _MESSAGE.size
    end = offset + length
    while at + _ATTRIBUTE.size <= end:
        size, kind = _ATTRIBUTE.unpack_from(buffer, at)
        if size < _ATTRIBUTE.size:
            return None
        if kind == wanted:
            return at + _ATTRIBUTE.size if size >= _ATTRIBUTE.size + 4 else None
        at += (size + 3) & ~3
    return None


def _cgroup_id(buffer: bytearray, offset: int, length: int) -> int | None:
    at = _attribute(buffer, offset, length, INET_DIAG_CGROUP_ID)
    return None if at is None else int(struct.unpack_from("=Q", buffer, at)[0])


def _tcp_info(buffer: bytearray, offset: int, length: int) -> tuple[int, int] | None:
    """(tcpi_retransmits, tcpi_probes) from the message's INET_DIAG_INFO attribute, if present."""
    at = _attribute(buffer, offset, length, INET_DIAG_INFO)
    return None if at is None else (buffer[at + 2], buffer[at + 3])  # after tcpi_state, tcpi_ca_state


def _read_dump(
    sock: socket.socket,
    sequence: int,
    inodes: set[int] | None,
    parser: _Parser,
    table: dict[int, Any],
) -> None:
    """Reads one dump's answers until NLMSG_DONE, adding the sockets of ``inodes`` to ``table``;
    OSError on an error. One loop over each received buffer: a socket not asked for costs two
    ``unpack_from`` calls and a set lookup."""
    buffer = bytearray(_RECEIVE_BUFFER)
    head, inode_at, entry = _HEAD.unpack_from, _U32.unpack_from, parser.entry
    while True:
        size = sock.recv_into(buffer)
        if size == 0:
            raise OSError(errno.EPROTO, "sock_diag ended a dump without NLMSG_DONE")
        offset = 0
        while offset + _HEADER.size <= size:
            length, kind, seq = head(buffer, offset)
            if length < _HEADER.size:
                raise OSError(errno.EPROTO, f"sock_diag answered a netlink message of {length} bytes")
            if seq == sequence:
                if kind == SOCK_DIAG_BY_FAMILY:
                    (inode,) = inode_at(buffer, offset + _INODE_OFFSET)
                    if inode and (inodes is None or inode in inodes):
                        table[inode] = entry(buffer, offset, length)
                elif kind == NLMSG_DONE:
                    return
                elif kind == NLMSG_ERROR:
                    (code,) = _ERROR_CODE.unpack_from(buffer, offset + _HEADER.size)
                    if code:
                        raise OSError(-code, f"sock_diag dump failed: {os.strerror(-code)}")
            offset += (length + 3) & ~3


def dump(
    states: Iterable[str] | None = None,
    inodes: set[int] | None = None,
    *,
    with_info: bool = True,
) -> dict[int, TcpEntry]:
    """The TCP sockets of this network namespace, by inode (IPv4 and IPv6), as ``tcp_table``.

    ``states``: state names to ask the kernel for (None: every state a process can hold; TIME_WAIT
    and request sockets have no inode and are never listed). ``inodes``: keep only these.
    ``with_info``: ask for ``tcp_info`` too, so the timer's probe and retransmission counts are
    both exact; without it only the one the kernel puts in ``idiag_retrans`` for the running
    timer is (the one ``ss -tno`` shows), the other is 0, and the dump costs about a third as
    much in the kernel (a tcp_info of ~250 bytes per socket is left out).
    Raises OSError when the kernel refuses (no sock_diag: ``EPROTONOSUPPORT``/``ENOENT``).
    """
    table: dict[int, TcpEntry] = {}
    extensions = 1 << (INET_DIAG_INFO - 1) if with_info else 0
    _dump_into(table, states_mask(states), extensions, inodes, _Parser(with_info))
    return table


def tcp_sockets(states: Iterable[str] | None = None) -> list[DiagSocket]:
    """The TCP sockets (IPv4 and IPv6) of this thread's network namespace in the given states
    (None: every state a process can hold), each with the cgroup it belongs to."""
    table: dict[int, DiagSocket] = {}
    _dump_into(table, states_mask(states), 0, None, _CgroupParser(False))
    return list(table.values())


def _dump_into(
    table: dict[int, Any], mask: int, extensions: int, inodes: set[int] | None, parser: _Parser
) -> None:
    """One dump per address family into ``table``; a kernel without IPv6 answers only IPv4."""
    if not mask:
        return
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
        for sequence, family in enumerate((socket.AF_INET, socket.AF_INET6), start=1):
            body = _REQUEST.pack(family, socket.IPPROTO_TCP, extensions, mask)
            header = _HEADER.pack(
                _HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, sequence, 0
            )
            sock.sendall(header + body)
            try:
                _read_dump(sock, sequence, inodes, parser, table)
            except OSError as exc:
                if family != socket.AF_INET6 or exc.errno not in (errno.ENOENT, errno.EAFNOSUPPORT):
                    raise


def available() -> bool:
    """Whether this kernel answers sock_diag dumps of TCP sockets here."""
    try:
        dump(states=("listen",), inodes=set())
    except OSError:
        return False
    return True
