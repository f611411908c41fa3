"""ka leaves alone a process whose sockets pidfd_getfd would re-tag: the kernel gives a received
socket the receiver's cgroup v1 net_cls classid and net_prio index (``__receive_sock``), so a
process in other net_cls/net_prio cgroups than ka's is skipped with the reason, and reached when
ka runs in the same cgroups. Against a real v1 net_cls,net_prio hierarchy the test mounts."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ka.cli import EXIT_FAILED, EXIT_OK
from ka.live import WouldRetag, cgroup
from ka.live.pidfd import Process, check_socket_tags
from live_helpers import EchoServer, echo_server, ka_command


def test_tagging_cgroups_are_read_per_controller(tmp_path: Path) -> None:
    (tmp_path / "41").mkdir()
    (tmp_path / "41" / "cgroup").write_text(
        "9:name=systemd:/\n7:net_cls,net_prio:/tc/gold\n4:memory:/x\n0::/system.slice/a.service\n"
    )
    assert cgroup.socket_tagging_cgroups(41, tmp_path) == {"net_cls": "/tc/gold", "net_prio": "/tc/gold"}
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_text("3:net_prio:/p\n0::/\n")  # net_cls not mounted: the root
    assert cgroup.socket_tagging_cgroups(42, tmp_path) == {"net_cls": "/", "net_prio": "/p"}
    assert cgroup.socket_tagging_cgroups(43, tmp_path) == {"net_cls": "/", "net_prio": "/"}


def test_tags_are_what_the_cgroups_files_say(tmp_path: Path) -> None:
    hierarchy = tmp_path / "netcls"
    (hierarchy / "tc" / "gold").mkdir(parents=True)
    (hierarchy / "tc" / "gold" / "net_cls.classid").write_text("1048577\n")
    (hierarchy / "tc" / "gold" / "net_prio.ifpriomap").write_text("lo 0\neth0 5\n")
    (hierarchy / "tc" / "plain").mkdir()
    (hierarchy / "tc" / "plain" / "net_cls.classid").write_text("0\n")
    (hierarchy / "tc" / "plain" / "net_prio.ifpriomap").write_text("lo 0\neth0 0\n")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"40 31 0:37 / {tmp_path}/systemd rw - cgroup cgroup rw,name=systemd\n"
        f"41 31 0:38 /tc {hierarchy}/tc rw - cgroup cgroup rw,net_cls,net_prio\n"
    )
    proc = tmp_path / "proc"
    for pid, path in ((1, "/tc/gold"), (2, "/tc/plain"), (3, "/elsewhere"), (4, "/")):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cgroup").write_text(f"7:net_cls,net_prio:{path}\n0::/\n")
    assert cgroup.socket_tags(1, proc, mountinfo) == {"net_cls": "1048577", "net_prio": "lo 0\neth0 5"}
    assert cgroup.socket_tags(2, proc, mountinfo) == {"net_cls": "", "net_prio": ""}  # the root's values
    # Not visible from here: the cgroup stands for its tags.
    assert cgroup.socket_tags(3, proc, mountinfo) == {
        "net_cls": "cgroup /elsewhere",
        "net_prio": "cgroup /elsewhere",
    }
    assert cgroup.socket_tags(4, proc, mountinfo) == {"net_cls": "", "net_prio": ""}


def test_a_process_in_ka_s_own_cgroups_is_reached() -> None:
    check_socket_tags(os.getpid())  # nothing raised: same cgroups, the tags stay


@pytest.fixture
def tagging_hierarchy() -> Iterator[Path]:
    """A v1 net_cls,net_prio hierarchy mounted for the test with one child cgroup; unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a cgroup v1 hierarchy needs root (CI runs the suite as root)")
    controllers = Path("/proc/cgroups").read_text()
    if "net_cls" not in controllers or "net_prio" not in controllers:
        pytest.skip("this kernel has no net_cls/net_prio cgroup controllers")
    if _hierarchy_id("net_cls") or _hierarchy_id("net_prio"):
        pytest.skip("net_cls/net_prio are already mounted on this host: the test leaves them alone")
    mount = Path(tempfile.mkdtemp(prefix=f"ka-netcls-{os.getpid()}-"))
    done = subprocess.run(
        ["mount", "-t", "cgroup", "-o", "net_cls,net_prio", "ka-test", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a net_cls,net_prio hierarchy here: {done.stderr.decode().strip()}")
    child = mount / f"ka-test-{os.getpid()}"
    try:
        child.mkdir()
        yield child
    finally:
        if child.exists():
            for pid in (child / "cgroup.procs").read_text().split():
                (mount / "cgroup.procs").write_text(pid)
            child.rmdir()
        # Unmounted while a removed child is still going offline, a hierarchy stays alive for good
        # (unmounted): wait until the kernel counts only its root, then unmount.
        for _ in range(100):
            if _cgroup_count("net_cls") <= 1:
                break
            time.sleep(0.1)
        subprocess.run(["umount", str(mount)], check=True)
        for _ in range(50):  # the root's release is asynchronous too
            if _hierarchy_id("net_cls") == 0:
                break
            time.sleep(0.1)
        mount.rmdir()
        assert _hierarchy_id("net_cls") == 0, "the net_cls,net_prio hierarchy outlived the test"


def _cgroups_line(controller: str) -> list[str]:
    """/proc/cgroups: subsys_name hierarchy num_cgroups enabled."""
    for line in Path("/proc/cgroups").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == controller:
            return fields
    return [controller, "0", "0", "0"]


def _hierarchy_id(controller: str) -> int:
    return int(_cgroups_line(controller)[1])


def _cgroup_count(controller: str) -> int:
    return int(_cgroups_line(controller)[2])


@pytest.fixture
def server_in_child(tagging_hierarchy: Path) -> Iterator[tuple[EchoServer, Path]]:
    with echo_server(2, 0) as server:
        (tagging_hierarchy / "cgroup.procs").write_text(str(server.pid))
        yield server, tagging_hierarchy


def test_a_process_whose_sockets_carry_a_classid_is_left_alone(
    server_in_child: tuple[EchoServer, Path],
) -> None:
    server, child = server_in_child
    (child / "net_cls.classid").write_text("0x100001")
    with pytest.raises(
        WouldRetag, match=rf"process {server.pid}'s sockets carry .* net_cls '1048577' \(ka's: 'none'\)"
    ):
        Process(server.pid)
    shown = ka_command("show", "--pid", str(server.pid))
    assert shown.returncode == EXIT_FAILED and "would re-tag them" in shown.stderr
    applied = ka_command("apply", "--pid", str(server.pid), "--idle", "60")
    assert applied.returncode == EXIT_FAILED and "would re-tag them" in applied.stderr
    # Every process: listed as skipped with the reason, the others still shown.
    everything = ka_command("show", "--state", "established")
    assert f"{server.pid}" in everything.stderr and "would re-tag them" in everything.stderr
    # ka in the same cgroups re-tags nothing: it reaches the process.
    join = ("sh", "-c", f'echo $$ > {child}/cgroup.procs && exec "$@"', "sh")
    shown = ka_command("show", "--pid", str(server.pid), "--state", "established", user=join)
    assert shown.returncode == EXIT_OK, shown.stderr
    assert f"process {server.pid}" in shown.stdout and "2 TCP connections" in shown.stdout


def test_another_cgroup_with_the_root_s_tags_is_reached(server_in_child: tuple[EchoServer, Path]) -> None:
    server, _child = server_in_child  # classid 0 and priority 0 everywhere: re-tagging changes nothing
    shown = ka_command("show", "--pid", str(server.pid), "--state", "established")
    assert shown.returncode == EXIT_OK, shown.stderr
    assert "2 TCP connections" in shown.stdout
