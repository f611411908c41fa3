"""The keepalive probe on the wire, captured on the near veth with an AF_PACKET socket.

Claims checked (RFC 1122 4.2.3.6, the seed article): a probe carries no payload, has ACK set and
the sequence number SND.NXT - 1; probes start ``idle`` seconds after the peer was last heard, come
every ``interval`` seconds, and after ``count`` unanswered probes the connection is dropped (Linux
then sends a RST). Two policies are probed at once, so one wait covers both.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

import ka
import netns

REASON = netns.unavailable()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

POLICIES = {
    "2/1/3": ka.KeepAlive(idle=2, interval=1, count=3),
    "1/2/2": ka.KeepAlive(idle=1, interval=2, count=2),
}
SLACK = 0.3  # seconds either side of a probe's expected time (timer rounding, a busy machine)
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
SO_RCVBUFFORCE = 33  # asm-generic/socket.h; Python does not export it
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # exported from Python 3.14
TCP_ACK, TCP_RST, TCP_FIN, TCP_SYN = 0x10, 0x04, 0x01, 0x02


@dataclass
class Segment:
    """One captured TCP segment (IPv4), with its capture time (CLOCK_REALTIME)."""

    at: float
    src: tuple[str, int]
    dst: tuple[str, int]
    seq: int
    ack: int
    flags: int
    payload: int


def parse(frame: bytes, at: float) -> Segment | None:
    """An Ethernet/IPv4/TCP frame as a Segment; None for anything else."""
    if len(frame) < 14 + 20 or struct.unpack("!H", frame[12:14])[0] != ETH_P_IP:
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack("!H", ip[2:4])[0]
    if ip[9] != socket.IPPROTO_TCP:
        return None
    tcp = ip[ihl:total]
    sport, dport, seq, ack, offset_flags = struct.unpack("!HHIIH", tcp[:14])
    header = (offset_flags >> 12) * 4
    return Segment(
        at,
        (socket.inet_ntoa(ip[12:16]), sport),
        (socket.inet_ntoa(ip[16:20]), dport),
        seq,
        ack,
        offset_flags & 0x3F,
        len(tcp) - header,
    )


def capture_socket() -> socket.socket:
    """An AF_PACKET socket (made in the caller's namespace) stamping each frame with its time."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    except BaseException:
        sock.close()
        raise
    return sock


def drain(sock: socket.socket) -> list[Segment]:
    segments: list[Segment] = []
    while True:
        try:
            frame, ancillary, _, _ = sock.recvmsg(65536, 64, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return segments
        at = time.time()
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", data[:16])
                at = sec + nsec / 1e9
        segment = parse(frame, at)
        if segment is not None:
            segments.append(segment)


@dataclass
class Probed:
    policy: ka.KeepAlive
    near: tuple[str, int]
    heard: float = 0.0  # CLOCK_REALTIME of the last reply
    errno: int = 0
    died: float = 0.0
    before: list[Segment] = field(default_factory=list)  # near -> far, before the far side went quiet
    after: list[Segment] = field(default_factory=list)  # near -> far, after
    far_last: Segment | None = None  # the last segment the far side sent


@pytest.fixture(scope="module")
def probed() -> Iterator[dict[str, Probed]]:
    with netns.NetnsPair() as pair:
        cap = pair.run("near", capture_socket)
        cap.bind((pair.ifnames["near"], ETH_P_ALL))
        near, far = netns.connect_pairs(pair, len(POLICIES))
        try:
            runs = {}
            for (name, policy), n, f in zip(POLICIES.items(), near, far):
                ka.apply(n, policy)
                runs[name] = Probed(policy, n.getsockname())
                n.sendall(b"request")
                assert f.recv(7) == b"request"
                f.sendall(b"reply!")
                assert n.recv(6) == b"reply!"
                runs[name].heard = time.time()
            time.sleep(0.2)  # the last ACKs go out before the far side goes quiet
            quiet = time.time()
            pair.silence("far")
            poller = select.epoll()
            by_fd = {s.fileno(): (s, r) for s, r in zip(near, runs.values())}
            for fd in by_fd:
                poller.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
            deadline = time.monotonic() + max(p.detection_time or 0 for p in POLICIES.values()) + 2
            left = len(by_fd)
            while left and (wait := deadline - time.monotonic()) > 0:
                for fd, _ in poller.poll(wait):
                    sock, r = by_fd[fd]
                    r.died = time.time()
                    r.errno = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    poller.unregister(fd)
                    left -= 1
            poller.close()
            time.sleep(0.1)  # the RST is on the wire before we drain
            segments = drain(cap)
            for r in runs.values():
                for seg in segments:
                    if seg.src == r.near:
                        (r.before if seg.at < quiet else r.after).append(seg)
                    elif seg.dst == r.near and seg.at < quiet:
                        r.far_last = seg
            yield runs
        finally:
            cap.close()
            for s in near + far:
                s.close()


@pytest.mark.parametrize("name", list(POLICIES))
def test_probes_are_empty_acks_one_below_snd_nxt(probed: dict[str, Probed], name: str) -> None:
    r = probed[name]
    assert r.before and r.far_last is not None, "nothing captured before the far side went quiet"
    # SND.NXT: one past the last byte sent (SYN and FIN count as one).
    snd_nxt = max(
        (s.seq + s.payload + (1 if s.flags & (TCP_SYN | TCP_FIN) else 0)) & 0xFFFFFFFF for s in r.before
    )
    assert r.far_last.ack == snd_nxt, "the far side's last ACK disagrees with SND.NXT from the capture"
    rcv_nxt = (r.far_last.seq + r.far_last.payload) & 0xFFFFFFFF
    probes = [s for s in r.after if not s.flags & TCP_RST]
    assert probes, "no keepalive probe captured"
    for probe in probes:
        assert probe.payload == 0, probe
        assert probe.flags == TCP_ACK, f"flags {probe.flags:#x}, expected ACK only"
        assert probe.seq == (snd_nxt - 1) & 0xFFFFFFFF, (probe.seq, snd_nxt)
        assert probe.ack == rcv_nxt


@pytest.mark.parametrize("name", list(POLICIES))
def test_probes_come_at_interval_and_count_then_reset(probed: dict[str, Probed], name: str) -> None:
    r = probed[name]
    policy = r.policy
    assert policy.idle and policy.interval and policy.count
    probes = [s for s in r.after if not s.flags & TCP_RST]
    resets = [s for s in r.after if s.flags & TCP_RST]
    offsets = [round(p.at - r.heard, 3) for p in probes]
    print(f"\n{name}: probes at {offsets} s after last heard; dropped after {r.died - r.heard:.3f} s")
    assert len(probes) == policy.count, offsets
    expected = [policy.idle + k * policy.interval for k in range(policy.count)]
    for got, want in zip(offsets, expected):
        assert want - SLACK <= got <= want + SLACK, (offsets, expected)
    gaps = [b.at - a.at for a, b in zip(probes, probes[1:])]
    assert all(abs(g - policy.interval) <= SLACK for g in gaps), gaps
    assert r.errno == errno.ETIMEDOUT
    # Linux resets the connection when it gives up, at idle + interval * count.
    assert len(resets) == 1 and resets[0].at > probes[-1].at
    assert policy.detection_time is not None
    assert abs(resets[0].at - r.heard - policy.detection_time) <= SLACK + 0.2
