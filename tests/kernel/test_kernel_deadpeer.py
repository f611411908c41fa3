"""A dead peer is found on schedule: two network namespaces, the far side silenced by nftables.

One module-scoped run sets up every connection, silences the far side once and waits for all of
them together (about idle + interval * count seconds), then each test checks its part:
a blocked recv() fails with ETIMEDOUT at the detection time, a connection without keepalive stays
open, a few hundred connections given the policy by apply_many all die on schedule, and
TCP_USER_TIMEOUT drops a connection whose data stays unacknowledged (where keepalive never probes).
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

import ka
import netns

REASON = netns.unavailable()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

POLICY = ka.KeepAlive(idle=2, interval=1, count=3)
AUTO = POLICY.replace(user_timeout="auto")
SHORT_UT = POLICY.replace(user_timeout=3)  # shorter than detection_time: cuts keepalive short
DETECTION = 5.0  # idle + interval * count
# A death counts as on schedule within [expected - EARLY, expected + LATE] seconds: the kernel's
# timers are exact to a jiffy, the rest is this shared 2-core machine waking the test up.
EARLY = 0.25
LATE = 1.0
# The user timeout is checked when a retransmission timer fires (backed off 0.2, 0.4, 0.8, ... s):
# measured here 0.4-0.7 s after the nominal time.
UT_LATE = 1.5
MANY = 300
TCP_ESTABLISHED = 1


@dataclass
class Outcome:
    """When a connection was last heard from, when it died (None: still open), and how."""

    heard: float
    died: float | None = None
    errno: int = 0

    @property
    def after(self) -> float:
        assert self.died is not None, "the connection did not die"
        return self.died - self.heard


@dataclass
class Run:
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    many: list[Outcome] = field(default_factory=list)
    bulk: ka.BulkResult | None = None
    sent: dict[str, float] = field(default_factory=dict)
    still_open: dict[str, bool] = field(default_factory=dict)
    watched_until: float = 0.0


def _exchange(near: socket.socket, far: socket.socket) -> float:
    """A request and a reply; returns when the reply arrived (the last time the peer was heard)."""
    near.sendall(b"ping")
    assert far.recv(4) == b"ping"
    far.sendall(b"pong")
    assert near.recv(4) == b"pong"
    return time.monotonic()


def _established(sock: socket.socket) -> bool:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    state = struct.unpack("B", info[:1])[0]
    return state == TCP_ESTABLISHED and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    result = Run()
    with netns.NetnsPair() as pair:
        names = ["blocked", "control", "user_timeout", "keepalive_only_in_flight", "short_user_timeout"]
        near, far = netns.connect_pairs(pair, len(names) + MANY)
        try:
            single = dict(zip(names, near))
            many_near = near[len(names) :]
            ka.apply(single["blocked"], POLICY)
            ka.apply(single["user_timeout"], AUTO)
            ka.apply(single["keepalive_only_in_flight"], POLICY)
            ka.apply(single["short_user_timeout"], SHORT_UT)
            result.bulk = ka.apply_many(many_near, POLICY)

            for name, (n, f) in zip(names, zip(near, far)):
                result.outcomes[name] = Outcome(_exchange(n, f))
            result.many = [Outcome(_exchange(n, f)) for n, f in zip(many_near, far[len(names) :])]
            time.sleep(0.2)  # let the last ACKs out before the far side goes quiet

            blocked = result.outcomes["blocked"]

            def wait_blocked() -> None:
                try:
                    single["blocked"].recv(1)
                except OSError as exc:
                    blocked.died, blocked.errno = time.monotonic(), exc.errno or 0

            waiter = threading.Thread(target=wait_blocked)
            waiter.start()
            pair.silence("far")
            # Data the far side will never acknowledge: keepalive stops probing, the user timeout counts.
            for name in ("user_timeout", "keepalive_only_in_flight"):
                single[name].sendall(b"unacknowledged")
                result.sent[name] = time.monotonic()

            # One wait for all: every connection that should die, until the last one's schedule has passed.
            watched = {s.fileno(): o for s, o in zip(many_near, result.many)}
            for name in ("control", "user_timeout", "keepalive_only_in_flight", "short_user_timeout"):
                watched[single[name].fileno()] = result.outcomes[name]
            by_fd = {s.fileno(): s for s in near}
            poller = select.epoll()
            for fd in watched:
                poller.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
            latest = max(o.heard for o in watched.values())
            deadline = max(latest + DETECTION + LATE, max(result.sent.values()) + DETECTION + UT_LATE) + 0.2
            expected_dead = len(result.many) + 2
            dead = 0
            while dead < expected_dead and (left := deadline - time.monotonic()) > 0:
                for fd, _ in poller.poll(left):
                    outcome = watched[fd]
                    outcome.died = time.monotonic()
                    outcome.errno = by_fd[fd].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    poller.unregister(fd)
                    dead += 1
            time.sleep(max(0.0, deadline - time.monotonic()))
            poller.close()
            waiter.join(timeout=LATE + 2)
            result.watched_until = time.monotonic()
            for name in ("control", "keepalive_only_in_flight"):
                result.still_open[name] = _established(single[name])
            yield result
        finally:
            for s in near + far:
                s.close()


def _on_schedule(seconds: float, expected: float = DETECTION, late: float = LATE) -> bool:
    return expected - EARLY <= seconds <= expected + late


def test_blocked_recv_fails_with_etimedout_at_detection_time(run: Run) -> None:
    blocked = run.outcomes["blocked"]
    assert blocked.errno == errno.ETIMEDOUT, errno.errorcode.get(blocked.errno)
    print(f"\nblocked connection: died {blocked.after:.3f} s after last heard (expected {DETECTION})")
    assert _on_schedule(blocked.after), blocked.after


def test_control_without_keepalive_stays_open(run: Run) -> None:
    control = run.outcomes["control"]
    assert control.died is None, "a connection without keepalive died"
    assert run.watched_until - control.heard > DETECTION + LATE
    assert run.still_open["control"]


def test_apply_many_connections_all_die_on_schedule(run: Run) -> None:
    assert run.bulk is not None and run.bulk.ok and run.bulk.applied == MANY
    assert len(run.many) == MANY
    assert [o.errno for o in run.many] == [errno.ETIMEDOUT] * MANY
    times = sorted(o.after for o in run.many)
    print(
        f"\n{MANY} connections: died {times[0]:.3f} / {times[len(times) // 2]:.3f} / {times[-1]:.3f} s "
        f"(min / median / max) after last heard (expected {DETECTION})"
    )
    late = [t for t in times if not _on_schedule(t)]
    assert late == [], f"{len(late)} of {MANY} off schedule: {late[:10]}"


def test_user_timeout_drops_connection_with_data_in_flight(run: Run) -> None:
    outcome = run.outcomes["user_timeout"]
    assert AUTO.user_timeout == AUTO.detection_time == DETECTION
    assert outcome.errno == errno.ETIMEDOUT, errno.errorcode.get(outcome.errno)
    assert outcome.died is not None
    since_sent = outcome.died - run.sent["user_timeout"]
    print(
        f"\nuser timeout ('auto' = {AUTO.user_timeout} s): "
        f"died {since_sent:.3f} s after the unacknowledged send"
    )
    assert _on_schedule(since_sent, AUTO.user_timeout, UT_LATE), since_sent


def test_keepalive_alone_does_not_probe_while_data_is_in_flight(run: Run) -> None:
    """Without a user timeout, the same keepalive policy does not find this dead peer in time."""
    outcome = run.outcomes["keepalive_only_in_flight"]
    assert outcome.died is None, f"died after {outcome.after:.3f} s"
    assert run.watched_until - run.sent["keepalive_only_in_flight"] > DETECTION + LATE
    assert run.still_open["keepalive_only_in_flight"]


def test_short_user_timeout_cuts_keepalive_short(run: Run) -> None:
    """Once a probe is out, Linux drops the connection when the user timeout has passed."""
    outcome = run.outcomes["short_user_timeout"]
    assert outcome.errno == errno.ETIMEDOUT, errno.errorcode.get(outcome.errno)
    print(f"\nuser timeout 3 s under a 5 s keepalive policy: died {outcome.after:.3f} s after last heard")
    assert _on_schedule(outcome.after, 3.0), outcome.after
