"""Socket diagnostics over netlink (``NETLINK_SOCK_DIAG``, the interface ``ss`` uses): the TCP
sockets of this thread's network namespace with their inode and the cgroup each belongs to.

A socket belongs to the cgroup of the process that created it, at the time it was created
(``INET_DIAG_CGROUP_ID``, Linux 5.7+; ``ss --cgroup`` shows it); /proc has no such field. No
privilege is needed. ``cgroup_id`` is None on kernels that do not report it.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from .model import Endpoint
from .procfs import TCP_STATES

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_CGROUP_ID = 21  # enum inet_diag_attr
_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_REQUEST = struct.Struct("=BBBBI48x")  # family, protocol, ext, pad, states, an empty inet_diag_sockid
_MESSAGE = struct.Struct("=BBBB2s2s16s16sI8xIIIII")  # inet_diag_msg
_ATTR = struct.Struct("=HH")
_STATE_NUMBERS = {name: number for number, name in TCP_STATES.items()}


class DiagSocket(NamedTuple):
    """One TCP socket as sock_diag reports it."""

    inode: int
    family: str
    state: str
    local: Endpoint
    remote: Endpoint
    cgroup_id: int | None


def _endpoint(family: int, port: bytes, address: bytes) -> Endpoint:
    raw = address[:4] if family == socket.AF_INET else address
    return Endpoint(str(ipaddress.ip_address(raw)), struct.unpack("!H", port)[0])


def _messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    at = 0
    while at + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, at)
        if length < _NLMSG.size:
            return
        yield kind, data[at + _NLMSG.size : at + length]
        at += (length + 3) & ~3


def _cgroup_of(attributes: bytes) -> int | None:
    at = 0
    while at + _ATTR.size <= len(attributes):
        length, kind = _ATTR.unpack_from(attributes, at)
        if length < _ATTR.size:
            return None
        if kind == INET_DIAG_CGROUP_ID and length >= _ATTR.size + 8:
            return int(struct.unpack_from("=Q", attributes, at + _ATTR.size)[0])
        at += (length + 3) & ~3
    return None


def _dump(family: int, states: int) -> Iterator[DiagSocket]:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG) as nl:
        request = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, states)
        header = _NLMSG.pack(
            _NLMSG.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
        )
        nl.sendall(header + request)
        while True:
            data = nl.recv(1 << 16)
            for kind, body in _messages(data):
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", body)[0]
                    if err == 0:
                        continue
                    raise OSError(err, f"sock_diag dump: {os.strerror(err)}")
                if kind != SOCK_DIAG_BY_FAMILY or len(body) < _MESSAGE.size:
                    continue
                fam, state, _timer, _retrans, sport, dport, src, dst, *_rest, inode = _MESSAGE.unpack_from(
                    body
                )
                yield DiagSocket(
                    inode,
                    "ipv4" if fam == socket.AF_INET else "ipv6",
                    TCP_STATES.get(state, f"state-{state}"),
                    _endpoint(fam, sport, src),
                    _endpoint(fam, dport, dst),
                    _cgroup_of(body[_MESSAGE.size :]),
                )


def tcp_sockets(states: Iterable[str] | None = None) -> list[DiagSocket]:
    """The TCP sockets (IPv4 and IPv6) of this thread's network namespace in the given states (as
    ``ka.live`` names them; None: every state)."""
    wanted = list(TCP_STATES.values()) if states is None else list(states)
    unknown = [s for s in wanted if s not in _STATE_NUMBERS]
    if unknown:
        raise ValueError(f"unknown TCP states {unknown}: expected names from {sorted(_STATE_NUMBERS)}")
    mask = 0
    for name in wanted:
        mask |= 1 << _STATE_NUMBERS[name]
    found: list[DiagSocket] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            found.extend(_dump(family, mask))
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EAFNOSUPPORT):  # no IPv6 here
                raise
    return found
