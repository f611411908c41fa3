"""ka audit against live processes: a redis-server without keepalive, a client with too long an
idle, a process ka may not read; exit 1 naming each, exit 0 once ``ka apply --pid`` fixed them.
Also the rules one by one, on values, and the selection flags on real processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import ka
from helpers import terminate
from ka import audit
from ka.bench.pool import stop_child
from ka.cli import EXIT_FAILED, EXIT_OK, EXIT_PERMISSION, EXIT_UNSUPPORTED, EXIT_USAGE
from ka.live import cgroup
from live_helpers import NOBODY, apply_to_remote, as_nobody, echo_server, ka_command, linux_only, root_only

# A client that connects, sets its own keepalive (idle, interval, count), says "ok", waits for stdin.
CLIENT = r"""
import socket, sys
host, port, idle, interval, count = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:6])
s = socket.create_connection((host, port))
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
s.sendall(b"PING\r\n"); assert s.recv(64).startswith(b"+PONG")
print("ok", flush=True)
sys.stdin.read()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis(NamedTuple):
    proc: subprocess.Popen[str]
    port: int


@pytest.fixture
def redis() -> Iterator[Redis]:
    """Our own redis-server as user nobody on a free loopback port, keepalive off (tcp-keepalive 0)."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("needs redis-server (Debian package redis-server)")
    with tempfile.TemporaryDirectory() as work:
        os.chmod(work, 0o777)
        port = free_port()
        command = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--tcp-keepalive", "0", "--dir", work, "--daemonize", "no", "--logfile", ""]
        proc = subprocess.Popen(
            [*NOBODY, *command], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, text=True
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.05)
            yield Redis(proc, port)
        finally:
            terminate(proc)


@pytest.fixture
def client(redis: Redis) -> Iterator[subprocess.Popen[str]]:
    """A client of that redis, as nobody, with keepalive idle 600 s, interval 10, count 5."""
    proc = subprocess.Popen(
        [*NOBODY, sys.executable, "-c", CLIENT, "127.0.0.1", str(redis.port), "600", "10", "5"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ok"
        yield proc
    finally:
        stop_child(proc, timeout=10)


def audit_json(*args: str, expect: int, user: tuple[str, ...] = ()) -> Any:
    out = ka_command("audit", *args, "--json", user=user)
    assert out.returncode == expect, out.stdout + out.stderr
    return json.loads(out.stdout)


RULES = ("--policy", "idle=60 interval=10 count=5", "--max-detection", "2m")


@linux_only
@root_only
@as_nobody
def test_audit_finds_planted_violations_and_passes_once_they_are_fixed(
    redis: Redis, client: subprocess.Popen[str]
) -> None:
    # The process ka (as nobody) may not read: this test's own, root-owned, holding a connection.
    with socket.create_server(("127.0.0.1", 0)) as listener, socket.create_connection(listener.getsockname()):
        pids = ("--pid", str(redis.proc.pid), "--pid", str(client.pid), "--pid", str(os.getpid()))
        data = audit_json(*pids, *RULES, expect=EXIT_FAILED, user=tuple(NOBODY))
        by_pid: dict[int, list[dict[str, Any]]] = {}
        for v in data["violations"]:
            by_pid.setdefault(v["pid"], []).append(v)
        (served,) = by_pid[redis.proc.pid]  # the client's connection, accepted by redis
        assert served["command"] == "redis-server" and served["local"]["port"] == redis.port
        assert served["has"]["enabled"] is False
        assert served["lacks"] == {
            "policy": "keepalive on, idle <= 60, interval <= 10, count <= 5",
            "max-detection": "keepalive on (a dead peer within 120 s)",
        }
        (calling,) = by_pid[client.pid]
        assert calling["command"] == "python3" or calling["command"].startswith("python")
        assert calling["remote"]["port"] == redis.port and calling["has"]["idle"] == 600
        assert calling["lacks"] == {
            "policy": "idle <= 60",
            "max-detection": "a dead peer within 120 s (found after 650 s)",
        }
        (refused,) = data["unreadable"]
        assert refused["pid"] == os.getpid() and refused["permission"] is True
        assert refused["reason"].startswith("it runs as uid 0 and ka as uid 65534; ")
        assert data["summary"]["violations"] == {"policy": 2, "max-detection": 2}
        assert data["exit_code"] == EXIT_FAILED

        text = ka_command("audit", *pids, *RULES, user=tuple(NOBODY))
        assert text.returncode == EXIT_FAILED
        assert f"{redis.proc.pid}  redis-server" in text.stdout and f"{client.pid}  python" in text.stdout
        assert f"{os.getpid()} (" in text.stdout and "it runs as uid 0 and ka as uid 65534" in text.stdout

        # ka apply --pid fixes both; the audit of what ka may read then passes.
        for pid, values in ((redis.proc.pid, ("60", "10", "5")), (client.pid, ("30", "5", "3"))):
            fixed = ka_command(
                "apply", "--pid", str(pid), "--idle", values[0], "--interval", values[1], "--count", values[2]
            )
            assert fixed.returncode == EXIT_OK, fixed.stderr
        mine = ("--pid", str(redis.proc.pid), "--pid", str(client.pid))
        clean = audit_json(*mine, *RULES, expect=EXIT_OK, user=tuple(NOBODY))
        assert clean["violations"] == [] and clean["summary"]["connections"] == 2
        # The unreadable one alone still keeps the audit from passing: exit 3, named.
        still = audit_json(*pids, *RULES, expect=EXIT_PERMISSION, user=tuple(NOBODY))
        assert [s["pid"] for s in still["unreadable"]] == [os.getpid()]
        # Selected by name and by port instead of by pid: the same two connections.
        by_name = audit_json("--name", "^redis-server$", "--port", str(redis.port), *RULES, expect=EXIT_OK)
        assert [p["pid"] for p in by_name["processes"]] == [redis.proc.pid]


@linux_only
def test_selection_flags_pick_processes_and_connections() -> None:
    with echo_server(3, 0) as a, echo_server(2, 0) as b:
        both = audit_json(
            "--pid", str(a.pid), "--pid", str(b.pid), "--max-detection", "1h", expect=EXIT_FAILED
        )
        assert [p["pid"] for p in both["processes"]] == [a.pid, b.pid]  # several --pid: each one
        assert [p["connections"] for p in both["processes"]] == [3, 2]
        one = a.clients[0].getsockname()
        remote = audit_json(
            "--pid",
            str(a.pid),
            "--remote",
            f"127.0.0.1:{one[1]}",
            "--max-detection",
            "1h",
            expect=EXIT_FAILED,
        )
        assert [v["remote"]["port"] for v in remote["violations"]] == [one[1]]
        network = audit_json(
            "--pid", str(a.pid), "--remote", "10.0.0.0/8", "--max-detection", "1h", expect=EXIT_OK
        )
        assert network["processes"] == []
        port = audit_json(
            "--pid",
            str(a.pid),
            "--pid",
            str(b.pid),
            "--port",
            str(b.ports[0]),
            "--max-detection",
            "1h",
            expect=EXIT_FAILED,
        )
        assert [p["pid"] for p in port["processes"]] == [b.pid]
        name = audit_json(
            "--name", "echo_server", "--pid", str(b.pid), "--max-detection", "1h", expect=EXIT_FAILED
        )
        assert [p["pid"] for p in name["processes"]] == [b.pid]  # kinds narrow: name and pid
        shown = json.loads(ka_command("show", "--pid", str(a.pid), "--pid", str(b.pid), "--json").stdout)
        assert [p["pid"] for p in shown["processes"]] == [a.pid, b.pid]


@linux_only
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--all"], "no rule: give --policy"),
        (["--max-detection", "60"], "say which processes to audit"),
        (["--all", "--pid", "1", "--max-detection", "60"], "--all picks every process"),
        (["--all", "--policy", "off"], "turns keepalive off, so no connection can carry less"),
        (["--all", "--max-detection", "soon"], "--max-detection 'soon' is not a duration"),
        (["--all", "--max-detection", "0"], "--max-detection '0': expected a positive duration"),
        (["--all", "--max-detection", "0s", "--json"], "--max-detection '0s': expected a positive duration"),
        (["--all", "--path-timeout", "2s"], "expected at least 3 seconds"),
        (["--all", "--path-timeout", "/nonexistent/probe.json"], "cannot read it"),
        (["--all", "--remote", "db.example:5432", "--max-detection", "60"], "no host names"),
        (["--all", "--name", "(", "--max-detection", "60"], "--name '(' is not a regular expression"),
        (["--unit", "no-such-unit-ka-test", "--max-detection", "60"], "no-such-unit-ka-test.service"),
        (["--pid", "0", "--max-detection", "60"], "--pid 0 is not a process id"),
    ],
)
def test_bad_usage_is_refused(args: list[str], message: str) -> None:
    if "--unit" in args:
        try:
            cgroup.cgroup2_mount()
        except cgroup.CgroupError as exc:  # a container or chroot without /sys/fs/cgroup: said so
            message = str(exc)
    out = ka_command("audit", *args)
    assert out.returncode == EXIT_USAGE and message in out.stderr, out.stderr


def test_the_help_gives_the_exit_code_of_each_outcome() -> None:
    """``ka audit --help`` once said 5 for a process not read for another reason than permission,
    which exits 6 (5 is a read-only /proc/sys): each outcome's code is the one it exits with."""
    from ka.cli.audit import EXIT_CODES

    text = " ".join(ka_command("audit", "--help").stdout.split())
    codes = text.partition("Exit ")[2].partition("bad usage.")[0] + "bad usage."
    said = dict(re.findall(r"(\d+): ([^;.]+)", codes))
    words = {
        audit.report.CLEAN: "every connection passes",
        audit.report.VIOLATIONS: "violations",
        audit.report.UNREADABLE_PERMISSION: "lack of ptrace permission",
        audit.report.UNREADABLE_ERROR: "for another reason",
    }
    for outcome, meaning in words.items():
        assert meaning in said.get(str(EXIT_CODES[outcome]), ""), (outcome, said)
    assert said[str(EXIT_USAGE)] == "bad usage"


def test_path_timeout_from_a_probe_result(tmp_path: Path) -> None:
    result = tmp_path / "probe.json"
    result.write_text(json.dumps({"target": "10.0.0.5:443", "idle_timeout": 350, "max": 3600}))
    rule = audit.probe_result(result)
    assert rule.limit == 315 and "probed on 10.0.0.5:443" in rule.description
    result.write_text(json.dumps({"target": "10.0.0.5:443", "idle_timeout": None, "max": 3600}))
    with pytest.raises(ValueError, match="found no idle timeout below its max of 3600 s"):
        audit.probe_result(result)
    result.write_text("[1]")
    with pytest.raises(ValueError, match="expected a `ka probe --json` result"):
        audit.probe_result(result)
    for endless in ("Infinity", "1e400", "NaN"):  # Python's json reads all three as floats
        result.write_text(f'{{"idle_timeout": {endless}}}')
        with pytest.raises(ValueError, match="expected at least 3 seconds, a finite number"):
            audit.probe_result(result)


def settings(enabled: bool, idle: int, interval: int, count: int, ut: float = 0.0) -> ka.KeepAliveSettings:
    return ka.KeepAliveSettings(enabled, idle, interval, count, ut)


def test_at_least_a_policy() -> None:
    rule = audit.AtLeastPolicy(ka.KeepAlive(60, 10, 5, user_timeout=110))
    assert rule.lacks(settings(True, 60, 10, 5, 110.0)) is None  # exactly the policy
    assert rule.lacks(settings(True, 30, 5, 3, 50.0)) is None  # stricter everywhere
    assert rule.lacks(settings(True, 61, 10, 5, 110.0)) == "idle <= 60"
    assert rule.lacks(settings(True, 60, 11, 6, 110.0)) == "interval <= 10, count <= 5"
    assert rule.lacks(settings(True, 60, 10, 5, 0.0)) == "user timeout <= 110 s"  # none set
    assert rule.lacks(settings(True, 60, 10, 5, 110.001)) == "user timeout <= 110 s"
    assert rule.lacks(settings(False, 60, 10, 5, 110.0)) == "keepalive on"
    partial = audit.AtLeastPolicy(ka.KeepAlive(idle=60))  # only what the policy sets is checked
    assert partial.lacks(settings(True, 60, 75, 9)) is None
    no_timeout = audit.AtLeastPolicy(ka.KeepAlive(60, 10, 5, user_timeout=0))
    assert no_timeout.lacks(settings(True, 60, 10, 5, 0.0)) is None


def test_max_detection_counts_the_user_timeout_by_linux_rule() -> None:
    rule = audit.MaxDetection(60)
    assert rule.lacks(settings(True, 30, 10, 3)) is None  # 60 s
    assert rule.lacks(settings(True, 30, 10, 4)) == "a dead peer within 60 s (found after 70 s)"
    # A user timeout of 45 s ends it at the first probe tick at or past it: 30 + 10 * 2 = 50 s.
    assert rule.lacks(settings(True, 30, 10, 9, 45.0)) is None
    assert rule.lacks(settings(True, 30, 10, 9, 55.0)) is None  # 30 + 10 * 3 = 60 s: within
    assert rule.lacks(settings(True, 30, 10, 9, 61.0)) == "a dead peer within 60 s (found after 70 s)"
    assert rule.lacks(settings(False, 1, 1, 1)) == "keepalive on (a dead peer within 60 s)"


def test_path_timeout_with_the_middlebox_margin() -> None:
    rule = audit.PathTimeout(350)
    policy = ka.KeepAlive.for_middlebox(350)
    assert rule.limit == policy.idle == 315
    assert rule.lacks(settings(True, 315, 17, 3)) is None
    assert rule.lacks(settings(True, 316, 17, 3)) == "idle <= 315 s (the path forgets idle flows after 350 s)"
    assert audit.PathTimeout(20).limit == 18  # the margin is at least 2 s
    assert rule.lacks(settings(False, 10, 1, 1)).startswith("keepalive on with idle <= 315 s")  # type: ignore[union-attr]


def test_require_user_timeout() -> None:
    rule = audit.RequireUserTimeout()
    assert rule.lacks(settings(True, 60, 10, 5, 0.5)) is None
    assert rule.lacks(settings(True, 60, 10, 5, 0.0)) == "a user timeout (TCP_USER_TIMEOUT)"
    assert audit.judge(settings(False, 60, 10, 5), [rule, audit.MaxDetection(60)]) == {
        "require-user-timeout": "a user timeout (TCP_USER_TIMEOUT)",
        "max-detection": "keepalive on (a dead peer within 60 s)",
    }


class CountingRule:
    """MaxDetection(60) that counts the values it is asked about."""

    name = "counted"
    description = "a dead peer within 60 s, counted"

    def __init__(self) -> None:
        self.asked: list[ka.KeepAliveSettings] = []

    def lacks(self, settings: ka.KeepAliveSettings) -> str | None:
        self.asked.append(settings)
        return audit.MaxDetection(60).lacks(settings)


@linux_only
def test_each_distinct_value_is_judged_once_and_counted_per_connection() -> None:
    # Six connections in one process (both ends of three pairs are this process's): four carry
    # 30/5/3 (a dead peer in 45 s), two keepalive off.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
        accepted = [listener.accept()[0] for _ in range(3)]
        try:
            quick = [*clients[:2], *accepted[:2]]
            ka.apply_many(quick, ka.KeepAlive(30, 5, 3)).raise_for_failures()
            counted = CountingRule()
            report = audit.audit(
                [counted, audit.MaxDetection(60)],
                ka.live.ProcessFilter((os.getpid(),)),
                ka.live.ConnectionFilter(states=frozenset({"established"})),
            )
            assert report.checked == 6
            assert len(counted.asked) == 2  # one per distinct value, not one per connection
            assert {s.enabled for s in counted.asked} == {True, False}
            assert report.count("counted") == report.count("max-detection") == 2
            (summary,) = report.summaries
            assert summary.violations == {"counted": 2, "max-detection": 2}
            slow = {os.fstat(s.fileno()).st_ino for s in (clients[2], accepted[2])}
            assert {v.connection.inode for v in report.violations} == slow
            assert all(set(v.lacks) == {"counted", "max-detection"} for v in report.violations)
        finally:
            for sock in clients + accepted:
                sock.close()


@linux_only
def test_the_collector_counts_each_group_by_value() -> None:
    pytest.importorskip("prometheus_client", reason="the exporter needs prometheus-client")
    from ka.audit.metrics import Collector

    with echo_server(5, 0) as srv:
        for client in srv.clients[:3]:  # 30/5/3: a dead peer after 45 s
            apply_to_remote(srv.pid, "idle=30 interval=5 count=3", client.getsockname()[1])
        collector = Collector([audit.MaxDetection(60)], ka.live.ProcessFilter((srv.pid,)))
        families = {family.name: family for family in collector.collect()}
        labels = {"pid": str(srv.pid), "port": str(srv.ports[0]), "direction": "in"}

        def value(name: str, **extra: str) -> float:
            (found,) = [
                s.value
                for s in families[
                    name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
                ].samples
                if s.name == name and s.labels.items() >= {**labels, **extra}.items()
            ]
            return float(found)

        assert value("ka_connections", keepalive="own") == 3 and value("ka_connections", keepalive="off") == 2
        assert value("ka_connections", keepalive="system") == 0
        assert value("ka_detection_seconds_bucket", le="30") == 0
        assert value("ka_detection_seconds_bucket", le="60") == 3
        assert value("ka_detection_seconds_bucket", le="+Inf") == 3
        assert value("ka_detection_seconds_count") == 3 and value("ka_detection_seconds_sum") == 3 * 45
        assert value("ka_audit_violations", rule="max-detection") == 2


@linux_only
def test_the_exporter_without_prometheus_client_names_the_extra_that_installs_it() -> None:
    code = (
        "import runpy, sys; sys.modules['prometheus_client'] = None; "  # import fails as if not installed
        f"sys.argv = ['ka', 'exporter', '--listen', '127.0.0.1:{free_port()}']; "
        "runpy.run_module('ka', run_name='__main__')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == EXIT_UNSUPPORTED, out.stderr
    assert out.stderr.startswith(
        "ka exporter needs prometheus-client, which is not installed: pip install 'ka[prometheus]'"
    )
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    if pyproject.exists():  # the extra named is one that installs it
        tomllib = pytest.importorskip("tomllib", reason="tomllib is in the stdlib from Python 3.11")
        extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
        assert [r for r in extras["prometheus"] if r.startswith("prometheus-client")]


@linux_only
def test_the_exporter_names_a_listen_address_it_cannot_serve_on() -> None:
    pytest.importorskip("prometheus_client", reason="ka exporter needs prometheus-client")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        in_use = f"127.0.0.1:{taken.getsockname()[1]}"
        elsewhere = f"192.0.2.1:{taken.getsockname()[1]}"  # TEST-NET-1: no address of this machine
        causes = {in_use: "Address already in use", elsewhere: "Cannot assign requested address"}
        for address, cause in causes.items():
            out = ka_command("exporter", "--listen", address, "--interval", "1s", "--pid", str(os.getpid()))
            assert out.returncode == EXIT_USAGE, out.stderr
            assert out.stderr == f"ka exporter: --listen '{address}': cannot serve there: {cause}\n"
