"""What a guard does and does not reach, against the real kernel: --keep-own, attaching again
(the policy replaced in place, the counters kept), a listener made before its process joined
the cgroup, and the sweep of connections that existed before (iterator and processes; the
iterator's fallback on a kernel too old for it). Root only; everything made is removed.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import pytest

import ka.live.cgroup
import netns
from guard_helpers import (
    Servers,
    connected_to,
    guard,
    guarded_cgroup,
    have,
    made_cgroup,
    more_pairs,
    shown,
    unavailable,
    values,
)
from helpers import EXPECTED, POLICY, fresh_values, kernel_values
from ka.guard import checks
from ka.guard.errors import Unsupported
from live_helpers import NOBODY, as_nobody, ka_command

REASON = unavailable()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

POLICY_TEXT = str(POLICY)
OTHER = "idle=44 interval=6 count=3 user_timeout=0"  # 0: back to the system behaviour
OTHER_VALUES = (1, 44, 6, 3, 0)
UNTOUCHED = fresh_values() if REASON is None else (0, 0, 0, 0, 0)
CURL_OWN = (1, 60, 60, 9, 0)  # curl sets 60/60 before connecting (its --keepalive-time default)
OLD_KERNEL = ["setarch", platform.machine(), "--uname-2.6"]


def _counters(guard_bpffs: Path, cgroup_id: int) -> dict[str, Any]:
    (found,) = [
        a for a in guard("list", "--bpffs", str(guard_bpffs))["attachments"] if a["cgroup_id"] == cgroup_id
    ]
    return dict(found)


def _by_port(conns: list[dict[str, Any]], ports: set[int]) -> list[dict[str, Any]]:
    return [c for c in conns if c["local"]["port"] in ports or c["remote"]["port"] in ports]


@pytest.mark.skipif(not have("curl"), reason="curl is not installed")
def test_keep_own_then_attaching_again_replaces_the_policy_in_place(
    guard_bpffs: Path, guard_servers: Servers
) -> None:
    try:
        checks.require_kernel("keep_own")
    except Unsupported as exc:
        pytest.skip(str(exc))
    port4, _ = guard_servers.ports
    with guarded_cgroup("own", guard_bpffs, POLICY_TEXT, "--keep-own") as (cgroup, attached):
        assert attached["keep_own"]
        before = len(guard_servers.accepted)
        curl = cgroup.start(["curl", "-s", f"http://127.0.0.1:{port4}/"])
        peer, _ = cgroup.peer(0, 0)
        guard_servers.wait(before + 1)
        assert [values(c) for c in shown(curl.pid)] == [CURL_OWN]  # keepalive on before: kept
        assert [values(c) for c in shown(peer.pid)] == [EXPECTED] * 4
        first = _counters(guard_bpffs, attached["cgroup_id"])
        assert first["counters"] | {"last_error": 0} == {
            "handled": 5,
            "applied": 4,
            "kept_own": 1,
            "options_failed": 0,
            "last_error": 0,
            "seen": 0,
        }
        again = guard("attach", OTHER, "--cgroup", cgroup.path, "--bpffs", str(guard_bpffs))
        assert again["updated"] and not again["keep_own"] and again["policy"] == OTHER
        assert again["link_id"] == attached["link_id"] and again["prog_id"] != attached["prog_id"]
        assert again["counters"] == first["counters"]  # carried over to the new program
        curl2 = cgroup.start(["curl", "-s", f"http://127.0.0.1:{port4}/"])
        guard_servers.wait(before + 2)
        fresh = set(more_pairs(peer, 1))
        assert [values(c) for c in shown(curl2.pid)] == [OTHER_VALUES]  # curl's 60/60 replaced
        assert [values(c) for c in _by_port(shown(peer.pid), fresh)] == [OTHER_VALUES] * 2
        assert [values(c) for c in shown(curl.pid)] == [CURL_OWN]  # established before: unchanged
        after = _counters(guard_bpffs, attached["cgroup_id"])["counters"]
        assert (after["handled"], after["applied"], after["kept_own"]) == (8, 7, 1)
        print(f"\n--keep-own, then attached again: {first['counters']} -> {after}")


def test_a_listener_made_before_joining_is_not_covered_and_is_reported(guard_bpffs: Path) -> None:
    with guarded_cgroup("late", guard_bpffs, POLICY_TEXT) as (cgroup, attached):
        peer, info = cgroup.peer(0, 0, "--listen-before-join")
        joined, _v6, early = info["listen"]
        mine = [connected_to(early), connected_to(joined)]
        try:
            conns = shown(peer.pid)
            accepted_early = _by_port(conns, {mine[0].getsockname()[1]})
            accepted_joined = _by_port(conns, {mine[1].getsockname()[1]})
            assert [values(c) for c in accepted_early] == [UNTOUCHED]  # the early listener's cgroup
            assert [values(c) for c in accepted_joined] == [EXPECTED]
            listed = _counters(guard_bpffs, attached["cgroup_id"])["uncovered_listeners"]
            swept = guard("sweep", "--cgroup", cgroup.path, "--bpffs", str(guard_bpffs))[
                "uncovered_listeners"
            ]
            for report in (listed, swept):
                assert [(x["pid"], x["local"]["port"]) for x in report] == [(peer.pid, early)]
                assert report[0]["socket_cgroup"] != cgroup.path
            assert kernel_values(mine[0]) == kernel_values(mine[1]) == UNTOUCHED
            text = ka_command("guard", "list", "--bpffs", str(guard_bpffs)).stdout
            fix = f"ka apply --pid {peer.pid} --state listen --local-port {early} --policy '{POLICY_TEXT}'"
            assert "connections they accept are not guarded" in text and fix in text, text
            # the fix the listing gives: the listener's options, which Linux copies to what it accepts
            applied = ka_command(*fix.split()[1:8], "--policy", POLICY_TEXT)
            assert applied.returncode == 0, applied.stderr
            mine.append(connected_to(early))
            time.sleep(0.1)
            accepted_later = _by_port(shown(peer.pid), {mine[-1].getsockname()[1]})
            assert [values(c) for c in accepted_later] == [EXPECTED]
        finally:
            for sock in mine:
                sock.close()


def test_the_sweep_reaches_connections_made_before_and_only_inside(
    guard_bpffs: Path, guard_servers: Servers
) -> None:
    port4, port6 = guard_servers.ports
    with made_cgroup("sweep") as cgroup:
        before = len(guard_servers.accepted)
        peer, _ = cgroup.peer(port4, port6)  # own4, own6 (both ends), out4, out6: 6 inside
        guard_servers.wait(before + 2)
        outside = guard_servers.accepted[before:]
        assert [values(c) for c in shown(peer.pid)] == [UNTOUCHED] * 6

        by_iterator = guard("sweep", POLICY_TEXT, "--cgroup", cgroup.path, "--bpffs", str(guard_bpffs))
        assert by_iterator["method"] == "iterator" and by_iterator["fallback_reason"] is None
        (reach,) = by_iterator["reaches"]
        assert (reach["handled"], reach["applied"], reach["failed"]) == (6, 6, 0)
        assert reach["seen"] >= 8  # every TCP socket of the namespace, the 2 outside ends included
        assert [values(c) for c in shown(peer.pid)] == [EXPECTED] * 6
        assert [kernel_values(s) for s in outside] == [UNTOUCHED] * 2

        by_processes = guard(
            "sweep", OTHER, "--cgroup", cgroup.path, "--method", "processes", "--bpffs", str(guard_bpffs)
        )
        assert by_processes["method"] == "processes"
        assert (by_processes["handled"], by_processes["applied"], by_processes["failed"]) == (6, 6, 0)
        assert [values(c) for c in shown(peer.pid)] == [OTHER_VALUES] * 6
        assert [kernel_values(s) for s in outside] == [UNTOUCHED] * 2

        old = guard(
            "sweep", POLICY_TEXT, "--cgroup", cgroup.path, "--bpffs", str(guard_bpffs), prefix=OLD_KERNEL
        )
        assert old["method"] == "processes" and "too old" in old["fallback_reason"]
        assert old["applied"] == 6
        where = ["--cgroup", cgroup.path, "--bpffs", str(guard_bpffs)]
        refused = guard("sweep", POLICY_TEXT, *where, "--method", "iterator", expect=4, prefix=OLD_KERNEL)
        assert refused["error"]["missing"] == "kernel"
        no_policy = guard("sweep", "--cgroup", cgroup.path, "--bpffs", str(guard_bpffs), expect=2)
        assert "give a policy" in no_policy["error"]["message"]

        attached = guard("attach", OTHER, "--cgroup", cgroup.path, "--sweep", "--bpffs", str(guard_bpffs))
        try:
            assert attached["sweep"]["policy"] == OTHER and attached["sweep"]["applied"] == 6
            assert [values(c) for c in shown(peer.pid)] == [OTHER_VALUES] * 6
        finally:
            guard("detach", "--cgroup", cgroup.path, "--bpffs", str(guard_bpffs))
        print(f"\nsweep: iterator {reach}, processes {by_processes['reaches']}")


def test_the_iterator_sweeps_each_network_namespace_the_cgroup_uses(guard_bpffs: Path) -> None:
    with netns.NetnsPair() as pair, made_cgroup("netns") as cgroup:
        peer, _ = cgroup.peer(0, 0, netns=pair.names["near"])  # own4, own6: 4 inside, in "near"
        report = guard("sweep", POLICY_TEXT, "--cgroup", cgroup.path, "--bpffs", str(guard_bpffs))
        assert report["method"] == "iterator"
        by_netns = {r["netns"]: (r["handled"], r["applied"]) for r in report["reaches"]}
        near_path = Path("/run/netns") / pair.names["near"]
        near, own = (f"net:[{os.stat(path).st_ino}]" for path in (near_path, "/proc/self/ns/net"))
        assert by_netns == {own: (0, 0), near: (4, 4)}, by_netns
        assert [values(c) for c in shown(peer.pid)] == [EXPECTED] * 4


def test_a_unit_and_a_process_name_the_cgroup(guard_bpffs: Path) -> None:
    with made_cgroup("guarded.service") as cgroup:
        unit = cgroup.directory.name
        sleeper = cgroup.start(["sleep", "60"], stdin=False)
        attached = guard("attach", POLICY_TEXT, "--unit", unit, "--bpffs", str(guard_bpffs))
        assert attached["cgroup"] == cgroup.path
        for _ in range(100):  # the shell joins, then execs sleep
            if sleeper.pid in ka.live.cgroup.pids(cgroup.cgroup):
                break
            time.sleep(0.02)
        (done,) = guard("detach", "--pid", str(sleeper.pid), "--bpffs", str(guard_bpffs))["detached"]
        assert done["cgroup_id"] == attached["cgroup_id"]


@as_nobody
def test_not_root_is_named(guard_bpffs: Path) -> None:
    with guarded_cgroup("nobody", guard_bpffs, POLICY_TEXT) as (cgroup, _attached):
        refused = guard(
            "attach", OTHER, "--cgroup", cgroup.path, "--bpffs", str(guard_bpffs), expect=3, prefix=NOBODY
        )
        assert refused["error"]["missing"] == "root" and "uid 65534" in refused["error"]["message"]
        listed = guard("list", "--bpffs", str(guard_bpffs), expect=3, prefix=NOBODY)
        assert listed["error"]["missing"] == "root", listed
