"""The ka command, run as a child process against a running, unmodified server, checked from outside."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from helpers import fresh_values
from ka.cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PERMISSION,
    EXIT_USAGE,
)
from live_helpers import (
    NOBODY,
    EchoServer,
    as_nobody,
    echo_server,
    have,
    ka_command,
    linux_only,
    root_only,
    round_trip,
    run_json,
    sockets_of,
    timer_seconds,
    wait_for_timers,
)

N4, N6 = 32, 8


@pytest.fixture
def server() -> Iterator[EchoServer]:
    with echo_server(N4, N6) as srv:
        yield srv


def established(srv: EchoServer) -> dict[tuple[str, int], tuple[int, int, int, int, int]]:
    """The server's established sockets, keyed by peer (our client's address), with their values."""
    return {s.peer: s.values for s in sockets_of(srv.pid) if s.peer is not None}


def echo_all(srv: EchoServer, tag: bytes) -> None:
    for i, sock in enumerate(srv.clients):
        payload = tag + b" %d" % i
        assert round_trip(sock, payload) == payload


@linux_only
def test_apply_changes_every_connection_while_the_server_keeps_serving(server: EchoServer) -> None:
    assert set(established(server).values()) == {fresh_values()}
    # Traffic on some connections all through the change.
    stop = threading.Event()
    errors: list[BaseException] = []
    trips = [0]

    def ping() -> None:
        try:
            while not stop.is_set():
                for sock in server.clients[:4]:
                    assert round_trip(sock, b"ping") == b"ping"
                    trips[0] += 1
        except (OSError, AssertionError) as exc:  # reported by the test below
            errors.append(exc)

    pinger = threading.Thread(target=ping)
    pinger.start()
    try:
        report = run_json(
            "apply",
            "--pid",
            str(server.pid),
            "--idle",
            "40",
            "--interval",
            "7s",
            "--count",
            "3",
            "--user-timeout",
            "auto",
        )
    finally:
        stop.set()
        pinger.join()
    assert not errors and trips[0] > 0

    assert report["matched"] == N4 + N6 and report["tcp_connections"] == N4 + N6 + len(server.ports)
    assert report["summary"] == {"applied": N4 + N6, "failed": 0, "gone": 0}
    assert report["policy"] == {"idle": 40, "interval": 7, "count": 3, "user_timeout": 61.0, "enabled": True}
    assert report["exit_code"] == 0
    for conn in report["connections"]:
        assert conn["status"] == "applied" and conn["error"] is None
        assert conn["before"]["enabled"] is False and conn["before"]["idle"] == 7200
        assert conn["after"] == {
            "enabled": True,
            "idle": 40,
            "interval": 7,
            "count": 3,
            "user_timeout": 61.0,
            "dead_peer_after": 61.0,
        }

    # From outside: our own duplicates of the server's descriptors, and the kernel's timers.
    seen = established(server)
    assert set(seen) == {sock.getsockname()[:2] for sock in server.clients}
    assert all(values == (1, 40, 7, 3, 61000) for values in seen.values())
    listeners = [s for s in sockets_of(server.pid) if s.peer is None]
    assert len(listeners) == len(server.ports) and all(s.values[0] == 0 for s in listeners)  # not selected
    echo_all(server, b"after")
    timers = wait_for_timers(server.ports, "keepalive", N4 + N6)
    assert len(timers) == N4 + N6
    for field in timers.values():
        name, seconds = timer_seconds(field)
        assert name == "keepalive" and 0 < seconds <= 40, field
    # New connections still come in and are served (with the listener's values, unchanged).
    with socket.create_connection(("127.0.0.1", server.ports[0]), timeout=5) as late:
        assert round_trip(late, b"late") == b"late"
        assert len(established(server)) == N4 + N6 + 1
        assert established(server)[late.getsockname()][0] == 0


@linux_only
def test_apply_to_the_listener_reaches_new_connections(server: EchoServer) -> None:
    report = run_json(
        "apply",
        "--pid",
        str(server.pid),
        "--idle",
        "90",
        "--interval",
        "9",
        "--count",
        "2",
        "--state",
        "listen",
    )
    assert report["summary"]["applied"] == len(server.ports)
    assert all(c["state"] == "listen" for c in report["connections"])
    assert all(v[0] == 0 for v in established(server).values())  # held connections untouched
    with socket.create_connection(("127.0.0.1", server.ports[0]), timeout=5) as late:
        assert round_trip(late, b"x") == b"x"
        assert established(server)[late.getsockname()] == (1, 90, 9, 2, 0)  # inherited at accept


@linux_only
def test_filters_select_only_matching_connections(server: EchoServer) -> None:
    one = server.clients[3].getsockname()[1]
    report = run_json("apply", "--pid", str(server.pid), "--idle", "55", "--remote-port", str(one))
    assert report["matched"] == 1 and report["connections"][0]["remote"]["port"] == one
    seen = established(server)
    assert [peer for peer, v in seen.items() if v[0]] == [("127.0.0.1", one)]
    assert seen[("127.0.0.1", one)][:2] == (1, 55)
    if len(server.ports) == 2:
        report = run_json(
            "apply",
            "--pid",
            str(server.pid),
            "--count",
            "5",
            "--local-port",
            str(server.ports[1]),
            "--state",
            "established",
        )
        assert report["matched"] == N6 and {c["family"] for c in report["connections"]} == {"ipv6"}
        assert sorted(v[3] for v in established(server).values()).count(5) == N6
    # Nothing matches: a clear exit 1, nothing changed.
    before = established(server)
    out = ka_command("apply", "--pid", str(server.pid), "--idle", "10", "--remote-port", "1")
    assert out.returncode == EXIT_FAILED and "nothing matched" in out.stderr
    assert established(server) == before


@linux_only
def test_dry_run_shows_the_change_and_changes_nothing(server: EchoServer) -> None:
    before = established(server)
    report = run_json(
        "apply", "--pid", str(server.pid), "--idle", "2m", "--interval", "10", "--count", "4", "--dry-run"
    )
    assert established(server) == before
    assert report["dry_run"] is True and report["summary"]["would change"] == N4 + N6
    first = report["connections"][0]
    assert first["status"] == "would change"
    assert (
        first["before"]["enabled"] is False
        and first["after"]["idle"] == 120
        and first["after"]["enabled"] is True
    )
    text = ka_command(
        "apply", "--pid", str(server.pid), "--idle", "2m", "--interval", "10", "--count", "4", "--dry-run"
    )
    assert text.returncode == EXIT_OK
    assert "dry run, nothing is changed" in text.stdout and "off 7200/75/9  on 120/10/4" in text.stdout
    assert established(server) == before


@linux_only
def test_show_reports_the_live_values(server: EchoServer) -> None:
    run_json(
        "apply",
        "--pid",
        str(server.pid),
        "--idle",
        "45",
        "--interval",
        "5",
        "--count",
        "6",
        "--remote-port",
        str(server.clients[0].getsockname()[1]),
    )
    data = run_json("show", "--pid", str(server.pid))
    (proc,) = data["processes"]
    assert proc["pid"] == server.pid and proc["uid"] == os.geteuid()
    conns = proc["connections"]
    assert len(conns) == N4 + N6 + len(server.ports)
    seen = {(s.local, s.peer): s.values for s in sockets_of(server.pid)}
    for conn in conns:
        local = (conn["local"]["address"], conn["local"]["port"])
        peer = None if conn["state"] == "listen" else (conn["remote"]["address"], conn["remote"]["port"])
        values = seen[(local, peer)]
        ka_ = conn["keepalive"]
        assert (
            int(ka_["enabled"]),
            ka_["idle"],
            ka_["interval"],
            ka_["count"],
            round(ka_["user_timeout"] * 1000),
        ) == values
        expected_timer = "keepalive" if values[0] else "none"
        assert conn["timer"]["name"] == expected_timer, conn
    text = ka_command("show", "--pid", str(server.pid), "--state", "established")
    assert text.returncode == EXIT_OK
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"process {server.pid} (python") and f"{N4 + N6} TCP connections" in lines[0]
    assert lines[1].split()[:5] == ["FD", "LOCAL", "REMOTE", "STATE", "KEEPALIVE"]
    assert sum(" on " in line for line in lines[2:]) == 1
    # the timer counts down from idle=45 s: how far depends on the machine's load, not on ka
    timers = [int(m) for m in re.findall(r"keepalive (\d+)s", text.stdout)]
    assert len(timers) == 1 and 0 < timers[0] <= 45, text.stdout


@linux_only
@root_only
@as_nobody
def test_apply_as_another_user_is_refused_and_changes_nothing(server: EchoServer) -> None:
    before = established(server)
    out = ka_command("apply", "--pid", str(server.pid), "--idle", "30", user=tuple(NOBODY))
    assert out.returncode == EXIT_PERMISSION
    assert f"needs ptrace permission over process {server.pid}" in out.stderr
    assert "it belongs to uid 0 and ka runs as uid 65534" in out.stderr and "CAP_SYS_PTRACE" in out.stderr
    data = run_json("show", "--pid", str(server.pid), expect=EXIT_PERMISSION, user=tuple(NOBODY))
    assert data["error"]["exit_code"] == EXIT_PERMISSION and "ptrace permission" in data["error"]["message"]
    assert established(server) == before


@linux_only
@root_only
@pytest.mark.skipif(not have("capsh"), reason="needs capsh (libcap2-bin)")
def test_apply_without_cap_sys_ptrace_is_refused(server: EchoServer) -> None:
    before = established(server)
    command = f"exec {sys.executable} -m ka apply --pid {server.pid} --idle 30 --interval 5 --count 3"
    out = subprocess.run(
        ["capsh", "--drop=cap_sys_ptrace", "--", "-c", command],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == EXIT_PERMISSION, out.stderr
    assert "ka has no CAP_SYS_PTRACE" in out.stderr
    assert "the process holds capabilities ka lacks (cap_sys_ptrace)" in out.stderr
    assert established(server) == before


@linux_only
@root_only
@as_nobody
def test_show_everything_skips_what_the_user_may_not_reach() -> None:
    # The server runs as nobody, and so does ka: it sees that server, and notes the others.
    with echo_server(3, 0, user=NOBODY) as srv:
        data = run_json("show", "--state", "established", user=tuple(NOBODY))
        mine = [p for p in data["processes"] if p["pid"] == srv.pid]
        assert len(mine) == 1 and len(mine[0]["connections"]) == 3 and mine[0]["uid"] == 65534
        assert {s["pid"] for s in data["skipped"]} >= {os.getpid()}
        assert all(s["reason"] == "no ptrace permission" for s in data["skipped"])
        out = ka_command("show", "--state", "established", user=tuple(NOBODY))
        assert out.returncode == EXIT_OK and f"process {srv.pid} (python" in out.stdout
        assert "skipped, most without ptrace permission" in out.stderr


# -- argument checking: exit 2 before anything is touched --------------------------------------


@linux_only
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--idle", "abc"], "--idle 'abc' is not a duration"),
        (["--count", "500"], "count=500 is out of range: count takes 1 to 127 probes"),
        (["--idle", "40000"], "idle=40000 is out of range"),
        (["--user-timeout", "soon"], "--user-timeout 'soon' is not a duration"),
        ([], "nothing to apply"),
        (["--off", "--idle", "5"], "--off turns keepalive off"),
        (["--idle", "5", "--state", "open"], "unknown TCP state 'open'"),
        (["--idle", "5", "--local-port", "0"], "--local-port 0 is not a TCP port"),
    ],
)
def test_apply_rejects_bad_values_before_touching_anything(
    server: EchoServer, args: list[str], message: str
) -> None:
    before = established(server)
    out = ka_command("apply", "--pid", str(server.pid), *args)
    assert out.returncode == EXIT_USAGE and message in out.stderr, out.stderr
    assert established(server) == before


def test_usage_errors_and_json_errors() -> None:
    assert ka_command("apply", "--idle", "5").returncode == EXIT_USAGE  # --pid missing (argparse)
    assert ka_command("frobnicate").returncode == EXIT_USAGE
    out = ka_command("apply", "--pid", "4194303", "--idle", "5", "--json")
    assert out.returncode == EXIT_USAGE
    assert json.loads(out.stdout) == {"error": {"message": "there is no process 4194303", "exit_code": 2}}


def test_help_reads_well() -> None:
    out = ka_command("--help")
    assert out.returncode == EXIT_OK
    for word in ("defaults", "show", "apply", "bench", "examples:", "exit codes:"):
        assert word in out.stdout
    for sub in ("defaults", "show", "apply"):
        text = ka_command(sub, "--help").stdout
        assert "--json" in text and "examples:" in text
