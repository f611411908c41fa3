"""ka defaults: the system's keepalive sysctls read and written by the ka command, in namespaces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ka.cli import (
    human,
    parse_duration,
)
from live_helpers import (
    KEEPALIVE_FILES,
    NOBODY,
    as_nobody,
    have,
    ka_command,
    linux_only,
    root_only,
    run_json,
)

# -- defaults ----------------------------------------------------------------------------------


@linux_only
def test_defaults_agree_with_proc_sys() -> None:
    idle, interval, count = (int(p.read_text()) for p in KEEPALIVE_FILES)
    data = run_json("defaults")
    assert (data["idle"], data["interval"], data["count"]) == (idle, interval, count)
    assert data["detection_time"] == idle + interval * count
    assert data["network_namespace"] == os.readlink("/proc/self/ns/net")
    text = ka_command("defaults").stdout
    assert f"net.ipv4.tcp_keepalive_time   = {idle}" in text
    assert f"A dead peer is found after {human(idle + interval * count)}" in text


def in_fresh_netns(script: str) -> subprocess.CompletedProcess[str]:
    """``sh -c script`` in a network namespace of its own (gone when it exits); $KA runs ka."""
    env = {**os.environ, "KA": f"{sys.executable} -m ka"}
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@linux_only
@root_only
@pytest.mark.skipif(not have("unshare"), reason="needs unshare (util-linux)")
def test_defaults_set_in_a_fresh_namespace() -> None:
    host = [p.read_text() for p in KEEPALIVE_FILES]
    out = in_fresh_netns(
        "$KA defaults --set idle=10m interval=30 count=4 --json && cat /proc/sys/net/ipv4/tcp_keepalive_time "
        "/proc/sys/net/ipv4/tcp_keepalive_intvl /proc/sys/net/ipv4/tcp_keepalive_probes && $KA defaults"
    )
    assert out.returncode == 0, out.stderr
    decoder = json.JSONDecoder()
    data, end = decoder.raw_decode(out.stdout)
    assert (data["idle"], data["interval"], data["count"], data["detection_time"]) == (600, 30, 4, 720)
    assert data["network_namespace"] != os.readlink("/proc/self/ns/net")
    rest = out.stdout[end:].split()
    assert rest[:3] == ["600", "30", "4"]
    assert "A dead peer is found after 12 min" in out.stdout
    assert [p.read_text() for p in KEEPALIVE_FILES] == host  # our own namespace untouched


@linux_only
@root_only
@pytest.mark.skipif(not have("unshare"), reason="needs unshare (util-linux)")
@as_nobody
def test_defaults_set_without_root_is_refused() -> None:
    nobody = " ".join(NOBODY)
    out = in_fresh_netns(
        f"{nobody} $KA defaults --set idle=100 interval=10 count=3; echo rc=$?; "
        "cat /proc/sys/net/ipv4/tcp_keepalive_time"
    )
    assert "rc=3" in out.stdout and out.stdout.split()[-1] == "7200"  # a fresh namespace's default, unchanged
    assert "writing /proc/sys/net/ipv4/tcp_keepalive_time needs root or CAP_NET_ADMIN" in out.stderr


@linux_only
@root_only
@pytest.mark.skipif(not have("unshare"), reason="needs unshare (util-linux)")
@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["idle=0"], "idle must be positive"),
        (["count=128"], "count=128 is out of range"),
        (["speed=3"], "--set takes KEY=VALUE with KEY one of idle (time, tcp_keepalive_time"),
        (["count=\u00b2"], "count '\u00b2' is not a whole number of probes"),
        (["idle=5", "time=6"], "--set names idle twice"),
    ],
)
def test_defaults_set_rejects_bad_values(pairs: list[str], message: str) -> None:
    out = in_fresh_netns(
        f"$KA defaults --set {' '.join(pairs)}; echo rc=$?; cat /proc/sys/net/ipv4/tcp_keepalive_time"
    )
    assert "rc=2" in out.stdout and out.stdout.split()[-1] == "7200"
    assert message in out.stderr


def test_set_system_defaults_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A write that fails after the first one went through puts the first one back.
    from ka import system

    if not sys.platform.startswith("linux"):
        pytest.skip("Linux only")
    (tmp_path / "tcp_keepalive_time").write_text("7200\n")
    (tmp_path / "tcp_keepalive_probes").write_text("9\n")
    (tmp_path / "tcp_keepalive_intvl").symlink_to("/dev/full")  # every write: ENOSPC
    monkeypatch.setattr(system, "PROC_DIR", tmp_path)
    monkeypatch.setattr(system, "system_defaults", lambda: system.SystemDefaults(7200, 75, 9, "test"))
    with pytest.raises(OSError, match=r"writing .*tcp_keepalive_intvl"):
        system.set_system_defaults(idle=100, interval=10, count=3)
    assert (tmp_path / "tcp_keepalive_time").read_text() == "7200\n"
    assert (tmp_path / "tcp_keepalive_probes").read_text() == "9\n"


def test_durations() -> None:
    assert parse_duration("90", "x") == 90
    assert parse_duration("1.5", "x") == 1.5
    assert parse_duration("2m", "x") == 120
    assert parse_duration("1h30m", "x") == 5400
    assert parse_duration("500ms", "x") == 0.5
    for bad in ("", "m", "5 parsecs", "-3", "1m2"):
        with pytest.raises(ValueError, match="x"):
            parse_duration(bad, "x")
    assert human(7875) == "2 h 11 min 15 s"
    assert human(110) == "1 min 50 s"
    assert human(4.5) == "4.5 s"


def test_unsupported_platform_exits_4(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ka import cli

    monkeypatch.setattr("ka.live.pidfd.PLATFORM", "darwin")
    assert cli.main(["show", "--pid", str(os.getpid()), "--json"]) == cli.EXIT_UNSUPPORTED
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["exit_code"] == 4 and "needs Linux (pidfd_getfd)" in error["message"]
    assert cli.main(["apply", "--pid", str(os.getpid()), "--idle", "5"]) == cli.EXIT_UNSUPPORTED


# -- tcp_retries2, key names, --persist, read-only /proc/sys, other namespaces (issues 19, 21, 22) --


@linux_only
def test_defaults_show_tcp_retries2_beside_the_keepalive_knobs() -> None:
    from ka.system import retransmission_timeout

    retries = int(Path("/proc/sys/net/ipv4/tcp_retries2").read_text())
    data = run_json("defaults")
    assert data["tcp_retries2"] == retries
    assert data["retransmission_timeout"] == retransmission_timeout(retries)
    text = ka_command("defaults").stdout
    assert f"net.ipv4.tcp_retries2         = {retries}" in text
    assert "TCP_USER_TIMEOUT bounds both" in text
    # The kernel's own figure for the default (Documentation/networking/ip-sysctl.rst).
    assert retransmission_timeout(15) == 924.6 and retransmission_timeout(0) == 0


def test_every_key_name_the_messages_show_is_accepted() -> None:
    import re

    from ka.cli import defaults
    from ka.cli.checks import UsageError

    with pytest.raises(UsageError) as info:
        defaults._parse_set(["speed=3"])
    shown = set(re.findall(r"[a-z][a-z0-9_.]*", str(info.value).split("one of", 1)[1].split(";")[0]))
    help_text = ka_command("defaults", "--help").stdout
    assert {"idle", "time", "tcp_keepalive_time", "net.ipv4.tcp_keepalive_time", "probes", "intvl"} <= shown
    assert shown == set(defaults.SET_KEYS)
    for name in shown:
        assert name in " ".join(help_text.split())
        field = defaults.SET_KEYS[name]
        value = "4" if field == "count" else "90"
        assert defaults._parse_set([f"{name}={value}"]) == {field: int(value)}
    # The output names the sysctls, and those names are accepted as they are printed.
    for line in ka_command("defaults").stdout.splitlines()[1:4]:
        assert line.split()[0] in shown


@linux_only
@root_only
@pytest.mark.skipif(not have("unshare"), reason="needs unshare (util-linux)")
def test_persist_writes_a_sysctl_file_that_sets_the_same_values(tmp_path: Path) -> None:
    conf = tmp_path / "90-ka-keepalive.conf"
    out = in_fresh_netns(f"$KA defaults --set idle=10m net.ipv4.tcp_keepalive_probes=4 --persist {conf}")
    assert out.returncode == 0, out.stderr
    assert f"Written to {conf} too: the values return at boot." in out.stdout
    lines = conf.read_text().splitlines()
    assert lines[0].startswith("# TCP keepalive defaults, written by ka defaults --set --persist")
    assert lines[1:] == [
        "net.ipv4.tcp_keepalive_time = 600",
        "net.ipv4.tcp_keepalive_intvl = 75",  # a fresh namespace's, as it is now
        "net.ipv4.tcp_keepalive_probes = 4",
    ]
    assert not [p for p in tmp_path.iterdir() if p != conf]  # no temporary file left
    # sysctl(8) reads it back into another fresh namespace: the same values.
    applied = in_fresh_netns(f"sysctl -q -p {conf} && $KA defaults --json")
    assert applied.returncode == 0, applied.stderr
    data = json.loads(applied.stdout)
    assert (data["idle"], data["interval"], data["count"]) == (600, 75, 4)
    # Without --persist: says how long it lasts.
    out = in_fresh_netns("$KA defaults --set idle=100")
    assert (
        "The change lasts until reboot: --persist also writes /etc/sysctl.d/90-ka-keepalive.conf"
        in out.stdout
    )


@linux_only
@root_only
@pytest.mark.skipif(not have("unshare"), reason="needs unshare (util-linux)")
def test_persist_to_a_place_that_cannot_take_it_changes_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "ka.conf"
    out = in_fresh_netns(
        f"$KA defaults --set idle=100 --persist {missing}; echo rc=$?; "
        "cat /proc/sys/net/ipv4/tcp_keepalive_time"
    )
    assert "rc=1" in out.stdout and out.stdout.split()[-1] == "7200", out.stderr
    assert f"writing {missing}" in out.stderr
    out = in_fresh_netns(f"$KA defaults --persist {tmp_path / 'x.conf'}; echo rc=$?")
    assert "rc=2" in out.stdout and "--persist writes the values --set gives" in out.stderr
    out = in_fresh_netns(f"$KA defaults --set idle=5 --persist {tmp_path}; echo rc=$?")
    assert "rc=2" in out.stdout and "is a directory" in out.stderr


def test_a_persist_file_that_cannot_be_completed_puts_the_sysctls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ka import system

    if not sys.platform.startswith("linux"):
        pytest.skip("Linux only")
    for name, value in (
        ("tcp_keepalive_time", "7200"),
        ("tcp_keepalive_intvl", "75"),
        ("tcp_keepalive_probes", "9"),
    ):
        (tmp_path / name).write_text(value + "\n")
    monkeypatch.setattr(system, "PROC_DIR", tmp_path)
    conf_dir = tmp_path / "sysctl.d"
    conf_dir.mkdir()

    def broken(temporary: Path, target: Path, text: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(system, "_complete", broken)
    with pytest.raises(OSError, match="No space left"):
        system.set_system_defaults(idle=100, count=3, persist=conf_dir / "ka.conf")
    assert (tmp_path / "tcp_keepalive_time").read_text() == "7200\n"
    assert (tmp_path / "tcp_keepalive_probes").read_text() == "9\n"
    assert list(conf_dir.iterdir()) == []  # the temporary file is gone too


@linux_only
@root_only
@pytest.mark.skipif(not have("unshare"), reason="needs unshare (util-linux)")
def test_read_only_proc_sys_has_its_own_exit_code() -> None:
    # A private mount namespace (gone with the shell) where /proc/sys is read-only, as in a
    # container; a private network namespace too, so nothing of the host could change.
    out = subprocess.run(
        [
            "unshare",
            "--mount",
            "--net",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && "
            "$KA defaults --set idle=100 interval=10; echo rc=$?; $KA defaults --set idle=100 --json; "
            "cat /proc/sys/net/ipv4/tcp_keepalive_time",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KA": f"{sys.executable} -m ka"},
        check=False,
    )
    assert "rc=5" in out.stdout, out.stdout + out.stderr
    assert (
        "ka defaults: /proc/sys/net/ipv4/tcp_keepalive_time is read-only here: /proc/sys is mounted"
        in out.stderr
    )
    assert "securityContext.sysctls" in out.stderr
    error = json.loads(out.stdout[out.stdout.index("{") : out.stdout.rindex("}") + 1])["error"]
    assert error["exit_code"] == 5
    assert out.stdout.split()[-1] == "7200"  # nothing written


@pytest.fixture
def netns_process() -> Iterator[int]:
    """A process (sleep) in a network namespace of its own; killed afterwards, the namespace with it."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not have("unshare"):
        pytest.skip("needs Linux, root and unshare")
    proc = subprocess.Popen(["unshare", "--net", "sleep", "120"])
    try:
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{proc.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline, "unshare did not make its namespace"
            time.sleep(0.01)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_defaults_of_another_process_namespace(netns_process: int) -> None:
    host = [p.read_text() for p in KEEPALIVE_FILES]
    pid = netns_process
    data = run_json("defaults", "--pid", str(pid), "--set", "idle=321", "interval=7", "count=5", "--k8s")
    assert data["network_namespace"] == os.readlink(f"/proc/{pid}/ns/net")
    assert (data["idle"], data["interval"], data["count"]) == (321, 7, 5)
    inside = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "cat", *map(str, KEEPALIVE_FILES)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert inside.stdout.split() == ["321", "7", "5"]
    assert [p.read_text() for p in KEEPALIVE_FILES] == host  # ours untouched
    assert data["k8s"] == (
        "securityContext:\n  sysctls:\n"
        '  - name: net.ipv4.tcp_keepalive_time\n    value: "321"\n'
        '  - name: net.ipv4.tcp_keepalive_intvl\n    value: "7"\n'
        '  - name: net.ipv4.tcp_keepalive_probes\n    value: "5"'
    )
    text = ka_command("defaults", "--pid", str(pid), "--k8s").stdout
    assert f"System keepalive defaults of process {pid}'s network namespace" in text
    assert "net.ipv4.tcp_keepalive_time   = 321" in text and data["k8s"] in text
    # All or nothing there too: a bad value changes nothing; --persist is for the host only.
    out = ka_command("defaults", "--pid", str(pid), "--set", "idle=9", "count=500")
    assert out.returncode == 2 and "count=500 is out of range" in out.stderr
    out = ka_command("defaults", "--pid", str(pid), "--set", "idle=9", "--persist")
    assert out.returncode == 2 and "not to a container's" in out.stderr
    assert run_json("defaults", "--pid", str(pid))["idle"] == 321


@linux_only
@root_only
@as_nobody
def test_defaults_of_another_namespace_needs_root(netns_process: int) -> None:
    out = ka_command("defaults", "--pid", str(netns_process), user=tuple(NOBODY))
    assert out.returncode == 3, out.stderr
    assert f"opening /proc/{netns_process}/ns/net needs ptrace permission" in out.stderr


@linux_only
@root_only
@pytest.mark.skipif(not have("ip"), reason="needs ip (iproute2)")
def test_defaults_of_a_named_namespace() -> None:
    name = f"ka-{os.getpid()}-defaults"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        data = run_json("defaults", "--netns", name, "--set", "time=77")
        assert data["idle"] == 77 and data["network_namespace"] != os.readlink("/proc/self/ns/net")
        inside = subprocess.run(
            ["ip", "netns", "exec", name, "cat", str(KEEPALIVE_FILES[0])],
            capture_output=True,
            text=True,
            check=True,
        )
        assert inside.stdout.strip() == "77"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
    out = ka_command("defaults", "--netns", name)
    assert out.returncode == 2 and f"there is no /run/netns/{name}" in out.stderr


@linux_only
@root_only
def test_a_netns_name_that_is_no_network_namespace_is_a_usage_error() -> None:
    # What `ip netns add` leaves when its bind mount is gone: a plain file under /run/netns.
    run_netns = Path("/run/netns")
    made_directory = not run_netns.exists()
    run_netns.mkdir(exist_ok=True)
    stale = run_netns / f"ka-{os.getpid()}-stale"
    stale.touch()
    try:
        for args in ([], ["--set", "idle=77"]):
            out = ka_command("defaults", "--netns", stale.name, *args, "--json")
            assert out.returncode == 2, out.stderr
            message = json.loads(out.stdout)["error"]["message"]
            expected = f"--netns {stale.name!r}: {stale} is not a network namespace (see 'ip netns list')"
            assert message == expected
    finally:
        stale.unlink()
        if made_directory:
            run_netns.rmdir()
