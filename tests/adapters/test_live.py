"""ka.live against the real kernel: /proc parsing, pidfd duplicates, bulk read and apply."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

import ka
from helpers import kernel_values, ss_timers
from ka import live
from ka.live import procfs
from live_helpers import NOBODY, as_nobody, echo_server, sockets_of, timer_seconds

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ka.live is Linux only")


def inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def own(*socks: socket.socket) -> list[live.Connection]:
    """This process's connections for these sockets, in the same order."""
    by_inode = {c.inode: c for c in live.connections(os.getpid())}
    return [by_inode[inode(s)] for s in socks]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def pair6() -> Iterator[tuple[socket.socket, socket.socket]]:
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with listener:
        client = socket.create_connection(listener.getsockname()[:2])
        accepted, _ = listener.accept()
    with client, accepted:
        yield client, accepted


def test_connections_match_the_sockets(
    pair: tuple[socket.socket, socket.socket], listener: socket.socket
) -> None:
    client, accepted = pair
    conns = own(client, accepted, listener)
    for conn, sock in zip(conns[:2], (client, accepted)):
        assert conn.fd == sock.fileno()
        assert conn.family == "ipv4"
        assert (conn.local.address, conn.local.port) == sock.getsockname()
        assert (conn.remote.address, conn.remote.port) == sock.getpeername()
        assert conn.state == "established"
        assert conn.timer.name == "none"  # keepalive is off, nothing in flight
    assert conns[2].state == "listen"
    assert conns[2].local.port == listener.getsockname()[1]
    assert str(conns[0].local) == "{}:{}".format(*client.getsockname())


def test_ipv6_connections(pair6: tuple[socket.socket, socket.socket]) -> None:
    client, accepted = pair6
    conn = own(client)[0]
    assert conn.family == "ipv6"
    assert (conn.local.address, conn.local.port) == client.getsockname()[:2]
    assert (conn.remote.address, conn.remote.port) == client.getpeername()[:2]
    assert str(conn.remote) == f"[::1]:{accepted.getsockname()[1]}"


def test_keepalive_timer_agrees_with_ss(pair: tuple[socket.socket, socket.socket]) -> None:
    client, accepted = pair
    ka.apply(accepted, ka.KeepAlive(50, 5, 3))
    conn = own(accepted)[0]
    assert conn.timer.name == "keepalive"
    assert 45 < conn.timer.expires <= 50
    assert conn.timer.probes == 0
    name, seconds = timer_seconds(ss_timers(accepted.getsockname()[1])[client.getsockname()])
    assert name == "keepalive"
    assert abs(seconds - conn.timer.expires) <= 1.5


def test_read_through_duplicates_matches_the_kernel(pair: tuple[socket.socket, socket.socket]) -> None:
    client, accepted = pair
    ka.apply(accepted, ka.KeepAlive(41, 6, 4, user_timeout=12.5))
    before = open_fds()
    states = live.read(os.getpid(), own(client, accepted))
    assert open_fds() == before  # every duplicate (and the pidfd) closed
    for state, sock in zip(states, (client, accepted)):
        assert state.error is None and state.settings is not None
        enabled, idle, interval, count, ut_ms = kernel_values(sock)
        assert state.settings == (bool(enabled), idle, interval, count, ut_ms / 1000)
    assert states[1].settings == (True, 41, 6, 4, 12.5)


def test_apply_through_duplicates_changes_the_socket(pair: tuple[socket.socket, socket.socket]) -> None:
    client, accepted = pair
    policy = ka.KeepAlive(33, 7, 4, user_timeout="auto")
    report = live.apply(os.getpid(), own(client, accepted), policy)
    assert [c.status for c in report.changes] == ["applied", "applied"]
    assert report.ok
    for change, sock in zip(report.changes, (client, accepted)):
        assert kernel_values(sock) == (1, 33, 7, 4, 61000)
        assert change.before is not None and not change.before.enabled
        assert change.after == (True, 33, 7, 4, 61.0)
        assert change.timer.name == "keepalive"  # read again after the change


def test_dry_run_changes_nothing(pair: tuple[socket.socket, socket.socket]) -> None:
    client, accepted = pair
    ka.apply(client, ka.KeepAlive(30, 5, 3))
    before = [kernel_values(s) for s in pair]
    report = live.apply(os.getpid(), own(client, accepted), ka.KeepAlive(30, 5, 3), dry_run=True)
    assert [kernel_values(s) for s in pair] == before
    assert [c.status for c in report.changes] == ["already set", "would change"]
    assert report.changes[1].after == (True, 30, 5, 3, 0.0)


def test_gone_and_reused_descriptors(pair: tuple[socket.socket, socket.socket]) -> None:
    client, accepted = pair
    closed_fd = os.dup2(accepted.fileno(), 900)  # a high number nothing else takes meanwhile
    reused_fd = client.fileno()
    conns = [c for c in live.connections(os.getpid()) if c.fd in (closed_fd, reused_fd)]
    with open(os.devnull, "rb") as other:
        os.close(closed_fd)  # closed after listing
        client.close()
        os.dup2(other.fileno(), reused_fd)  # the number now names another file
        try:
            report = live.apply(os.getpid(), conns, ka.KeepAlive(30, 5, 3))
        finally:
            os.close(reused_fd)
    statuses = {c.connection.fd: (c.status, c.error) for c in report.changes}
    assert statuses == {
        reused_fd: ("gone", f"descriptor {reused_fd} now names another file"),
        closed_fd: ("gone", f"descriptor {closed_fd} was closed"),
    }
    assert report.ok  # gone is not a failure
    assert kernel_values(accepted)[0] == 0  # the socket behind the closed number was not touched


def test_chunks_keep_few_descriptors_open(monkeypatch: pytest.MonkeyPatch) -> None:
    with echo_server(10, 0) as server:
        conns = live.select(live.connections(server.pid), states=frozenset({"established"}))
        assert len(conns) == 10
        monkeypatch.setattr("ka.live.pidfd.chunk_size", lambda: 3)
        before = open_fds()
        report = live.apply(server.pid, conns, ka.KeepAlive(20, 4, 2))
        assert open_fds() == before
        assert report.count("applied") == 10
        assert all(s.values == (1, 20, 4, 2, 0) for s in sockets_of(server.pid) if s.peer)


def test_filters() -> None:
    a = live.Connection(
        1,
        3,
        10,
        "ipv4",
        live.Endpoint("127.0.0.1", 80),
        live.Endpoint("127.0.0.1", 5000),
        "established",
        live.Timer("none", 0.0, 0, 0),
    )
    b = a._replace(fd=4, remote=live.Endpoint("127.0.0.1", 5001), state="close-wait")
    c = a._replace(fd=5, remote=live.Endpoint("0.0.0.0", 0), state="listen")
    assert live.select([a, b, c], remote_port=5001) == [b]
    assert live.select([a, b, c], states=live.normalize_states(["connected"])) == [a, b]
    assert live.select([a, b, c], local_port=80, states=live.normalize_states(["listen", "ESTABLISHED"])) == [
        a,
        c,
    ]
    with pytest.raises(ValueError, match="unknown TCP state 'open'"):
        live.normalize_states(["open"])
    with pytest.raises(ValueError, match="local_port=70000 is not a TCP port"):
        live.select([a], local_port=70000)


def test_parse_tcp_line() -> None:
    # A keepalive timer 29.5 s away (2950 ticks at USER_HZ 100), two probes out, IPv4 in host order.
    line = (
        "   0: 0100007F:1F90 0200007F:C350 01 00000000:00000000 02:00000B86 00000000  1000        2 4242 1 0"
        " 20 4 30 10 -1"
    )
    entry = procfs.parse_tcp_line(line, "ipv4")
    assert entry.local == ("127.0.0.1", 8080) and entry.remote == ("127.0.0.2", 50000)
    assert entry.state == "established" and entry.uid == 1000 and entry.inode == 4242
    assert entry.timer.name == "keepalive" and entry.timer.probes == 2
    assert entry.timer.expires == pytest.approx(0xB86 / os.sysconf("SC_CLK_TCK"))


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ((True, 7200, 75, 9, 0.0), 7875.0),  # the system defaults: 2 h 11 min 15 s
        ((True, 60, 10, 5, 0.0), 110.0),
        ((True, 60, 10, 5, 110.0), 110.0),  # user timeout = detection time: same moment
        ((True, 60, 10, 5, 30.0), 70.0),  # shorter than idle: dropped at the first tick after a probe
        ((True, 60, 10, 5, 300.0), 300.0),  # longer: probes go on past count until it runs out
        ((True, 60, 10, 5, 305.0), 310.0),
        ((False, 60, 10, 5, 0.0), None),
    ],
)
def test_dead_peer_after(settings: tuple[bool, int, int, int, float], expected: float | None) -> None:
    assert live.dead_peer_after(ka.KeepAliveSettings(*settings)) == expected


@as_nobody
def test_pidfd_getfd_without_permission_raises_not_permitted(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # As nobody, against this (root) process: the duplicate itself must be refused, and named.
    fd = pair[1].fileno()
    code = (
        "import sys\nfrom ka import live\n"
        f"proc = live.Process({os.getpid()})\n"
        f"conn = live.Connection({os.getpid()}, {fd}, 0, 'ipv4', live.Endpoint('', 0), "
        "live.Endpoint('', 0), 'established', live.Timer('none', 0.0, 0, 0))\n"
        "try:\n    proc.duplicate([conn])\n"
        "except live.NotPermitted as exc:\n    print(exc.errno, exc.strerror)\n"
    )
    out = subprocess.run(
        [*NOBODY, sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"1 ka needs ptrace permission over process {os.getpid()}")
    assert "it runs as uid 0 and ka as uid 65534" in out.stdout
    assert "ka has no CAP_SYS_PTRACE" in out.stdout


def test_no_such_process() -> None:
    with pytest.raises(ProcessLookupError, match="there is no process"):
        live.connections(2**22 + 12345)
