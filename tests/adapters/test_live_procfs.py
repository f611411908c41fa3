"""ka.live.procfs beyond this process's loopback sockets: the per-namespace table cache across real
network namespaces, IPv6 addresses with no zero words, timer and state codes, and /proc trees
without ``tcp6`` (a kernel booted with IPv6 off) or without a process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

import netns
from ka.live import Timer, procfs
from ka.live.model import TcpEntry

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ka.live is Linux only")

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def tcp4_line(
    local: str = "0100007F:1F90",
    remote: str = "0200007F:C350",
    state: str = "01",
    timer: str = "02:00000B86",
    retransmits: str = "00000000",
    probes: int = 2,
    inode: int = 4242,
    uid: int = 1000,
) -> str:
    return (
        f"   0: {local} {remote} {state} 00000000:00000000 {timer} {retransmits} {uid:5d}"
        f" {probes:8d} {inode} 1 0 20 4 30 10 -1"
    )


# --- parsing: timer and state fields, IPv6 addresses ------------------------------------------------


def test_every_timer_field_is_read() -> None:
    # A retransmission timer ("on", code 1) 2.5 s away, 10 retransmissions (hex 0A), 3 probes.
    entry = procfs.parse_tcp_line(
        tcp4_line(timer=f"01:{int(2.5 * TICKS):08X}", retransmits="0000000A", probes=3), "ipv4"
    )
    assert entry.timer == Timer("on", 2.5, 3, 10)
    # No timer (code 0): 0.0 s whatever the when field holds, as ss shows it.
    entry = procfs.parse_tcp_line(tcp4_line(timer="00:00000064", probes=0), "ipv4")
    assert entry.timer == Timer("none", 0.0, 0, 0)


def test_codes_the_tables_do_not_know_are_named_by_number() -> None:
    # A kernel newer than these tables may add timer and state codes: shown by number, not dropped.
    entry = procfs.parse_tcp_line(tcp4_line(timer=f"0C:{3 * TICKS:08X}", state="0D"), "ipv4")
    assert entry.timer.name == "timer-12" and entry.timer.expires == 3.0
    assert entry.state == "state-13"
    assert procfs.parse_tcp_line(tcp4_line(state="0A"), "ipv4").state == "listen"  # hex, not decimal


@pytest.mark.skipif(sys.byteorder != "little", reason="the literal below is a little-endian kernel's line")
def test_ipv6_addresses_without_zero_words() -> None:
    # The kernel prints the address as four 32-bit words in host order; with no zero word, a word
    # read from the wrong offset or in the wrong order shows.
    line = (
        "   3: B80D01200100A3852E8A020034737003:01BB AB0024FD0000CD000000000009000000:D431 01"
        " 00000000:00000000 00:00000000 00000000     0        0 777 1 0 20 4 30 10 -1"
    )
    entry = procfs.parse_tcp_line(line, "ipv6")
    assert entry.local == ("2001:db8:85a3:1:2:8a2e:370:7334", 443)
    assert entry.remote == ("fd24:ab:cd::9", 54321)
    assert entry.family == "ipv6" and entry.inode == 777


@pytest.mark.skipif(sys.byteorder != "little", reason="the literal below is a little-endian kernel's line")
def test_ipv4_addresses_whose_word_is_above_a_signed_int() -> None:
    # 10.0.0.200 and 192.168.1.1: their native-endian words are 0xC800000A and 0x0101A8C0
    entry = procfs.parse_tcp_line(tcp4_line(local="C800000A:0050", remote="0101A8C0:D431"), "ipv4")
    assert entry.local == ("10.0.0.200", 80) and entry.remote == ("192.168.1.1", 54321)


# --- a /proc tree made by the test -----------------------------------------------------------------


def make_process(
    proc: Path,
    pid: int,
    sockets: dict[int, int],
    tcp: list[str] | None,
    tcp6: list[str] | None,
    netns_of: int | None = None,
) -> None:
    """``proc/PID`` with ``fd/N -> socket:[inode]`` links, ``net/tcp``/``tcp6`` when given, and an
    ``ns/net`` file: its own, or a hard link to process ``netns_of``'s (one namespace)."""
    base = proc / str(pid)
    (base / "fd").mkdir(parents=True)
    (base / "net").mkdir()
    (base / "ns").mkdir()
    for fd, inode in sockets.items():
        os.symlink(f"socket:[{inode}]", base / "fd" / str(fd))
    os.symlink("pipe:[99]", base / "fd" / "0")  # not a socket: ignored
    for name, lines in (("tcp", tcp), ("tcp6", tcp6)):
        if lines is not None:
            (base / "net" / name).write_text(HEADER + "".join(line + "\n" for line in lines))
    if netns_of is None:
        (base / "ns" / "net").write_text("")
    else:
        os.link(proc / str(netns_of) / "ns" / "net", base / "ns" / "net")


@pytest.fixture
def fake_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(procfs, "PROC", tmp_path)
    return tmp_path


def test_a_tree_without_tcp6_lists_ipv4(fake_proc: Path) -> None:
    # A kernel booted with ipv6.disable=1 has no /proc/net/tcp6.
    lines = [
        tcp4_line(inode=11),
        tcp4_line(inode=0, state="06"),  # TIME_WAIT: held by no process
        "   9: garbage",  # a short line: skipped
        tcp4_line(inode=12, local="0100007F:0050", state="0A", timer="00:00000000"),
    ]
    make_process(fake_proc, 321, {5: 11, 7: 12, 9: 13}, tcp=lines, tcp6=None)
    table = procfs.tcp_table(321)
    assert sorted(table) == [11, 12]
    assert procfs.tcp_table(321, {12}) == {12: table[12]}
    conns = procfs.connections(321)
    assert [(c.fd, c.inode, c.state, c.local.port) for c in conns] == [
        (5, 11, "established", 8080),
        (7, 12, "listen", 80),
    ]  # fd 9's socket is in no TCP table (UDP, Unix): left out
    assert all(c.pid == 321 and c.family == "ipv4" for c in conns)


def test_a_tree_without_tcp_is_an_error(fake_proc: Path) -> None:
    make_process(fake_proc, 322, {5: 11}, tcp=None, tcp6=[])
    with pytest.raises(FileNotFoundError):
        procfs.tcp_table(322)
    with pytest.raises(FileNotFoundError):  # the process is there: not a vanished process
        procfs.connections(322)


def test_a_process_that_exits_while_read(fake_proc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(procfs, "socket_fds", lambda pid: {5: 11})  # listed, then gone
    with pytest.raises(ProcessLookupError, match="process 323 has exited"):
        procfs.connections(323)


def test_the_table_cache_is_one_per_namespace(fake_proc: Path) -> None:
    v6 = "00000000000000000000000001000000"  # ::1
    make_process(fake_proc, 401, {3: 21}, tcp=[tcp4_line(inode=21)], tcp6=[])
    make_process(
        fake_proc, 402, {4: 22}, tcp=[], tcp6=[tcp4_line(local=f"{v6}:0050", remote=f"{v6}:C350", inode=22)]
    )
    # 403 shares 401's namespace (the same ns/net inode): its table is 401's.
    make_process(fake_proc, 403, {6: 21}, tcp=[], tcp6=[], netns_of=401)
    tables: dict[int, dict[int, TcpEntry]] = {}
    assert [(c.pid, c.fd, c.family) for c in procfs.connections(401, tables)] == [(401, 3, "ipv4")]
    [v6conn] = procfs.connections(402, tables)
    assert (v6conn.fd, v6conn.local, v6conn.remote.port) == (4, ("::1", 80), 50000)
    # 403's own (empty) files are not read: the namespace's table is taken from the cache.
    assert [(c.pid, c.fd, c.inode) for c in procfs.connections(403, tables)] == [(403, 6, 21)]
    inode_of = {pid: os.stat(fake_proc / str(pid) / "ns" / "net").st_ino for pid in (401, 402)}
    assert set(tables) == set(inode_of.values())
    assert sorted(tables[inode_of[401]]) == [21] and sorted(tables[inode_of[402]]) == [22]


def test_a_process_without_a_namespace_link_gets_its_own_entry(fake_proc: Path) -> None:
    make_process(fake_proc, 404, {3: 21}, tcp=[tcp4_line(inode=21)], tcp6=[])
    (fake_proc / "404" / "ns" / "net").unlink()  # unreadable: keyed by the (negative) pid instead
    tables: dict[int, dict[int, TcpEntry]] = {}
    assert [c.fd for c in procfs.connections(404, tables)] == [3]
    assert list(tables) == [-404]


# --- real network namespaces ---------------------------------------------------------------------

NEAR6, FAR6 = "2001:db8:24::1", "2001:db8:24::2"  # documentation prefix, only inside the namespaces

# Far: listens on IPv4 and IPv6, accepts one connection on each. Near: makes both. Each prints
# its ports and waits for its stdin to close.
PEER = """
import socket, sys
role, v4, v6 = sys.argv[1], sys.argv[2], sys.argv[3]
if role == "far":
    listeners = [socket.create_server((v4, 0)), socket.create_server((v6, 0), family=socket.AF_INET6)]
    print(*(s.getsockname()[1] for s in listeners), flush=True)
    accepted = [s.accept()[0] for s in listeners]
else:
    p4, p6 = sys.argv[4], sys.argv[5]
    conns = [socket.create_connection((v4, int(p4))), socket.create_connection((v6, int(p6)))]
    print(*(c.getsockname()[1] for c in conns), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def pair() -> Iterator[netns.NetnsPair]:
    why = netns.unavailable()
    if why:
        pytest.skip(why)
    with netns.NetnsPair() as made:
        for side, address in (("near", NEAR6), ("far", FAR6)):
            made.exec(side, "ip", "-6", "addr", "add", f"{address}/64", "dev", made.ifnames[side], "nodad")
        yield made


@contextmanager
def _peer(pair: netns.NetnsPair, side: str, *args: str) -> Iterator[tuple[int, list[int]]]:
    """A PEER process in ``side``'s namespace: (its pid, the ports it printed); ended on exit."""
    with subprocess.Popen(
        ["ip", "netns", "exec", pair.names[side], sys.executable, "-c", PEER, side, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            yield proc.pid, [int(p) for p in proc.stdout.readline().split()]
        finally:
            proc.stdin.close()
            proc.wait(10)


def test_connections_of_processes_in_two_namespaces(pair: netns.NetnsPair) -> None:
    tables: dict[int, dict[int, TcpEntry]] = {}
    with ExitStack() as peers:
        far, (p4, p6) = peers.enter_context(_peer(pair, "far", netns.FAR_ADDR, FAR6))
        near, (n4, n6) = peers.enter_context(_peer(pair, "near", netns.FAR_ADDR, FAR6, str(p4), str(p6)))
        near_conns = procfs.connections(near, tables)
        far_conns = procfs.connections(far, tables)
        assert near_conns == procfs.connections(near)  # the cache changes nothing seen
        assert far_conns == procfs.connections(far)
    # Each process's connections come from its own namespace's table, kept once per namespace.
    ns = {side: os.stat(f"/run/netns/{pair.names[side]}").st_ino for side in ("near", "far")}
    assert set(tables) == set(ns.values())
    seen = {(c.family, c.state, str(c.local), str(c.remote)) for c in near_conns}
    assert seen == {
        ("ipv4", "established", f"{netns.NEAR_ADDR}:{n4}", f"{netns.FAR_ADDR}:{p4}"),
        ("ipv6", "established", f"[{NEAR6}]:{n6}", f"[{FAR6}]:{p6}"),
    }
    seen = {(c.family, c.state, str(c.local), str(c.remote)) for c in far_conns}
    assert seen == {
        ("ipv4", "listen", f"{netns.FAR_ADDR}:{p4}", "0.0.0.0:0"),
        ("ipv6", "listen", f"[{FAR6}]:{p6}", "[::]:0"),
        ("ipv4", "established", f"{netns.FAR_ADDR}:{p4}", f"{netns.NEAR_ADDR}:{n4}"),
        ("ipv6", "established", f"[{FAR6}]:{p6}", f"[{NEAR6}]:{n6}"),
    }
    near_tcp = {e.inode for e in tables[ns["near"]].values()}
    assert {c.inode for c in near_conns} <= near_tcp and not {c.inode for c in far_conns} & near_tcp


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a process's uids needs root")
def test_process_owner_is_the_effective_uid() -> None:
    # real and saved uid 0, effective 65534 (nobody): the uid permission checks use
    code = "import os, sys\nos.setresuid(0, 65534, 0)\nprint(flush=True)\nsys.stdin.read()\n"
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        child.stdout.readline()
        try:
            assert procfs.process_owner(child.pid) == 65534
            assert procfs.thread_group(child.pid) == child.pid
        finally:
            child.stdin.close()
            child.wait(10)
    assert procfs.process_owner(child.pid) is None  # gone
