"""ka guard against the real kernel: a cgroup made by the test, programs started inside it, every
connection read back from outside (``ka show``, ``ss -tnoe``), the counters read back from the
kernel (``ka guard list``), and the failure paths. Root only; each test removes its cgroups,
links, pins and the private bpffs it mounted, on every exit path.

The module's clients and servers run side by side: one attachment, every client started at
once, one read.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import ka
import ka.guard
from guard_helpers import (
    Servers,
    attached_programs,
    connect_when_listening,
    connected_to,
    free_port,
    guard,
    guarded_cgroup,
    have,
    inode_of,
    keepalive_timers,
    keepalive_timers_now,
    more_pairs,
    shown,
    unavailable,
    values,
)
from helpers import EXPECTED, POLICY, fresh_values, kernel_values

REASON = unavailable()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

POLICY_TEXT = str(POLICY)  # idle=33 interval=7 count=4 user_timeout=12.345
UNTOUCHED = fresh_values() if REASON is None else (0, 0, 0, 0, 0)
OWN_VALUES = (1, 99, 11, 2, EXPECTED[4])  # guard_peer.py --own-values sets 99/11/2 after connecting
REDIS_CLI = (
    1,
    15,
    5,
    3,
    EXPECTED[4],
)  # redis-cli sets keepalive 15 s (interval 15/3, 3 probes) after connecting


@dataclass
class Clients:
    """What the clients inside the guarded cgroup hold, read from outside."""

    attached: dict[str, Any]
    peer: subprocess.Popen[str]
    inside: dict[str, list[dict[str, Any]]]  # program -> its connections as ka show reads them
    own_values_port: int
    outside: list[socket.socket]  # the test's ends: accepted by its servers, or its clients
    listed: dict[str, Any] = field(default_factory=dict)  # ka guard list --json, after the reads
    timers: dict[int, tuple[str, float]] = field(default_factory=dict)

    def connections(self) -> list[tuple[str, dict[str, Any]]]:
        return [(name, c) for name, conns in self.inside.items() for c in conns]


@pytest.fixture(scope="module")
def clients(guard_bpffs: Path, guard_servers: Servers) -> Iterator[Clients]:
    """The policy attached to a cgroup; inside it a Python client and server, socat, curl, busybox
    nc (client and listener) and redis-cli, over IPv4 and IPv6; the test's own sockets outside."""
    port4, port6 = guard_servers.ports
    mine: list[socket.socket] = []
    with guarded_cgroup("clients", guard_bpffs, POLICY_TEXT) as (cgroup, attached):
        inner = cgroup.child("inner")
        try:
            peer, info = cgroup.peer(port4, port6, "--own-values")
            mine += [connected_to(info["listen"][0]), connected_to(info["listen"][1], socket.AF_INET6)]
            programs_in: dict[str, int] = {"python": peer.pid}
            expected_out = 3  # the peer's out4, out6 and own-values connections
            if have("socat"):
                programs_in["socat4"] = cgroup.start(["socat", "-u", "-", f"TCP4:127.0.0.1:{port4}"]).pid
                # in a cgroup below the guarded one: covered too
                programs_in["socat6"] = inner.start(["socat", "-u", "-", f"TCP6:[::1]:{port6}"]).pid
                expected_out += 2
            if have("curl"):
                programs_in["curl"] = cgroup.start(["curl", "-s", f"http://127.0.0.1:{port4}/"]).pid
                expected_out += 1
            if have("busybox"):
                programs_in["busybox4"] = cgroup.start(["busybox", "nc", "127.0.0.1", str(port4)]).pid
                programs_in["busybox6"] = cgroup.start(["busybox", "nc", "::1", str(port6)]).pid
                expected_out += 2
                nc_port = free_port()
                programs_in["busybox-listen"] = cgroup.start(["busybox", "nc", "-l", "-p", str(nc_port)]).pid
                mine.append(connect_when_listening(nc_port))
            if have("redis-cli"):
                programs_in["redis-cli"] = cgroup.start(
                    ["redis-cli", "-h", "127.0.0.1", "-p", str(port4), "PING"]
                ).pid
                expected_out += 1
            guard_servers.wait(expected_out)
            time.sleep(0.2)  # the last handshakes' callbacks
            timers = keepalive_timers_now()  # first: redis-cli's 15 s idle must not have run out
            with ThreadPoolExecutor(4) as pool:  # ka show per process, side by side
                inside = dict(zip(programs_in, pool.map(shown, programs_in.values())))
            made = Clients(
                attached,
                peer,
                inside,
                info["made"]["own_values"],
                guard_servers.accepted[-expected_out:] + mine,
            )
            made.timers = {c["inode"]: timers.get(c["inode"], ("", 0.0)) for _, c in made.connections()}
            made.listed = guard("list", "--bpffs", str(guard_bpffs))
            yield made
        finally:
            inner.close()
            for sock in mine:
                sock.close()


def test_attach_reports_the_policy_and_its_pins(clients: Clients, guard_bpffs: Path) -> None:
    attached = clients.attached
    assert attached["state"] == "attached" and attached["policy"] == POLICY_TEXT
    assert attached["counters"]["handled"] == 0 and not attached["updated"] and not attached["mounted_bpffs"]
    pins = Path(attached["pins"])
    assert pins == guard_bpffs / "ka" / str(attached["cgroup_id"])
    assert sorted(os.listdir(pins)) == ["counters", "link", "policy"]
    assert attached["prog_id"] in attached_programs(Path(ka.guard.target(attached["cgroup"]).directory))


def test_every_connection_inside_reads_back_the_policy(clients: Clients) -> None:
    """Python client and server, socat, curl (its 60/60 set before connecting is replaced),
    static busybox nc as client and listener; IPv4 and IPv6; outgoing and accepted."""
    assert {"python", "socat4", "socat6", "curl", "busybox4", "busybox6", "busybox-listen"} <= set(
        clients.inside
    )
    families = set()
    for name, conn in clients.connections():
        if name == "redis-cli" or conn["local"]["port"] == clients.own_values_port:
            continue
        families.add(conn["family"])
        assert values(conn) == EXPECTED, (name, conn)
    assert families == {"ipv4", "ipv6"}
    python = clients.inside["python"]
    # own4/own6 client and server ends, out4, out6, own-values, and the test's two connections in
    assert len(python) == 9
    print(
        f"\n{len(clients.connections())} connections inside the cgroup read back: "
        + ", ".join(f"{n} {len(c)}" for n, c in clients.inside.items())
    )


def test_a_program_that_sets_its_own_values_later_keeps_them(clients: Clients) -> None:
    own = [c for c in clients.inside["python"] if c["local"]["port"] == clients.own_values_port]
    assert [values(c) for c in own] == [OWN_VALUES]
    if "redis-cli" not in clients.inside:
        pytest.skip("redis-cli is not installed (Debian package redis-tools)")
    assert [values(c) for c in clients.inside["redis-cli"]] == [REDIS_CLI]


def test_ss_shows_the_policys_keepalive_timer_inside(clients: Clients) -> None:
    for name, conn in clients.connections():
        timer, left = clients.timers[conn["inode"]]
        idle = (
            15
            if name == "redis-cli"
            else 99
            if conn["local"]["port"] == clients.own_values_port
            else POLICY.idle
        )
        assert timer == "keepalive" and 0 < left <= (idle or 0), (name, conn["local"], timer, left)


def test_connections_outside_the_cgroup_are_untouched(clients: Clients) -> None:
    assert len(clients.outside) >= 10
    print(f"\n{len(clients.outside)} connections outside read back the system defaults")
    assert [kernel_values(s) for s in clients.outside] == [UNTOUCHED] * len(clients.outside)
    timers = keepalive_timers([inode_of(s) for s in clients.outside], 0, timeout=0)
    assert [t for t, _ in timers.values() if t == "keepalive"] == []


def test_list_reads_the_counters_back_from_the_kernel(clients: Clients) -> None:
    (listed,) = [a for a in clients.listed["attachments"] if a["cgroup_id"] == clients.attached["cgroup_id"]]
    inside = len(clients.connections())
    assert listed["state"] == "attached" and listed["policy"] == POLICY_TEXT
    counters = listed["counters"]
    print(f"\ncounters: {counters} for {inside} connections established inside")
    assert counters["handled"] == inside
    assert counters["applied"] == inside
    assert counters["options_failed"] == 0 and counters["kept_own"] == 0
    assert listed["uncovered_listeners"] == []


def test_after_detach_new_connections_are_untouched(clients: Clients, guard_bpffs: Path) -> None:
    cgroup_path = clients.attached["cgroup"]
    done = guard("detach", "--cgroup", cgroup_path, "--bpffs", str(guard_bpffs))
    (final,) = done["detached"]
    assert final["counters"]["handled"] == len(clients.connections())
    assert attached_programs(ka.guard.target(cgroup_path).directory) == []
    assert not Path(final["pins"]).exists()
    fresh_ports = set(more_pairs(clients.peer, 2))
    after = shown(clients.peer.pid)
    fresh = [c for c in after if c["local"]["port"] in fresh_ports or c["remote"]["port"] in fresh_ports]
    assert len(fresh) == 4  # two pairs, both ends in the peer
    assert [values(c) for c in fresh] == [UNTOUCHED] * 4
    old = [c for c in after if c not in fresh and c["local"]["port"] != clients.own_values_port]
    assert len(old) == 8 and all(values(c) == EXPECTED for c in old)  # they keep what they got
