"""ka defaults: the system's keepalive sysctls read and written by the ka command, in namespaces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
