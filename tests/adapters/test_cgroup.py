"""ka.live.cgroup against this machine's cgroup v2 hierarchy: a cgroup made by the test, a child
process moved into it, a unit found by name; mountinfo parsing from text."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import ka.cli
import ka.guard
from ka.live import cgroup
from live_helpers import ka_command, made_cgroup

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="cgroups are Linux only")


def _v2_or_skip() -> Path:
    try:
        return cgroup.cgroup2_mount()
    except cgroup.CgroupError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def made() -> Iterator[cgroup.Cgroup]:
    """A slice and a service cgroup below the root, made for this test and always removed."""
    with made_cgroup("ka-test") as made:
        yield made


def test_mountinfo_names_the_v2_mount_wherever_it_is(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/un\\040ified rw,relatime shared:9 - cgroup2 cgroup2 rw\n"
    )
    assert cgroup.cgroup2_mount(info) == Path("/sys/fs/cgroup/un ified")


def test_no_v2_mount_is_a_clear_error(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text("40 31 0:37 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n")
    with pytest.raises(cgroup.CgroupError, match="no cgroup v2 hierarchy is mounted"):
        cgroup.cgroup2_mount(info)


def test_this_process_is_in_the_cgroup_proc_says() -> None:
    root = _v2_or_skip()
    line = next(x for x in Path("/proc/self/cgroup").read_text().splitlines() if x.startswith("0::"))
    found = cgroup.of_pid(os.getpid())
    assert found.path == line[3:]
    assert found.directory == (root / line[4:] if line[3:] != "/" else root)
    assert os.getpid() in cgroup.pids(found, recursive=False)


def test_a_missing_process_is_a_lookup_error() -> None:
    _v2_or_skip()
    with pytest.raises(ProcessLookupError, match="no process with pid"):
        cgroup.of_pid(2**22 + 1)


def test_paths_outside_the_hierarchy_or_not_cgroups_are_refused(tmp_path: Path) -> None:
    root = _v2_or_skip()
    with pytest.raises(cgroup.CgroupError, match="leaves the cgroup v2 hierarchy"):
        cgroup.resolve("/../../etc", root)
    with pytest.raises(cgroup.CgroupError, match="is not a cgroup v2 directory"):
        cgroup.resolve("/no-such-cgroup-here", root)
    assert cgroup.resolve("/", root) == cgroup.Cgroup(root, "/")


def test_an_empty_path_is_refused_not_taken_for_the_root() -> None:
    # ``--cgroup "$UNSET"`` must not guard, sweep or audit every process of the host.
    root = _v2_or_skip()
    with pytest.raises(cgroup.CgroupError, match="empty"):
        cgroup.resolve("", root)
    with pytest.raises(cgroup.CgroupError, match="empty"):
        ka.guard.target("")
    assert cgroup.resolve(".", root) == cgroup.resolve("/", root) == cgroup.Cgroup(root, "/")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = ka.cli.main(["audit", "--cgroup", "", "--max-detection", "1m", "--json"])
    assert code == 2, out.getvalue()
    assert "empty" in json.loads(out.getvalue())["error"]["message"]


def test_a_process_in_the_root_cgroup_does_not_name_the_whole_host(tmp_path: Path) -> None:
    # ``ka guard attach ... --pid P`` for a process in the root cgroup (every process of a host
    # without a cgroup manager is) would guard, and --sweep change, every connection of the host.
    root = _v2_or_skip()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as child:
        try:
            if cgroup.of_pid(child.pid).path != "/":
                if os.geteuid() != 0:
                    pytest.skip("moving a process to the root cgroup needs root")
                (root / "cgroup.procs").write_text(str(child.pid))
            with pytest.raises(ValueError, match=f"process {child.pid} runs in the root cgroup"):
                ka.guard.target(pid=child.pid)
            out = ka_command("guard", "detach", "--pid", str(child.pid), "--bpffs", str(tmp_path), "--json")
            assert out.returncode == 2, out.stderr
            assert "give --cgroup / (cgroup='/') to mean that" in json.loads(out.stdout)["error"]["message"]
        finally:
            child.kill()
    assert ka.guard.target("/") == cgroup.Cgroup(root, "/")  # named as such, the root is taken


@pytest.mark.parametrize("bad", ["", "a/b", ".hidden", "x" * 256, "sp ace.service"])
def test_bad_unit_names_are_refused_before_any_lookup(bad: str) -> None:
    with pytest.raises(ValueError, match="expected a systemd unit name"):
        cgroup.unit_name(bad)


def test_unit_names_get_the_service_suffix() -> None:
    assert cgroup.unit_name("myapp") == "myapp.service"
    assert cgroup.unit_name("myapp.scope") == "myapp.scope"
    assert cgroup.unit_name("getty@tty1.service") == "getty@tty1.service"


def test_a_process_moved_into_a_made_cgroup_is_found_there(made: cgroup.Cgroup) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (made.directory / "cgroup.procs").write_text(str(child.pid))
        assert cgroup.of_pid(child.pid) == made
        assert cgroup.pids(made) == [child.pid]
        parent = cgroup.resolve(made.directory.parent)
        assert cgroup.pids(parent, recursive=False) == []
        assert cgroup.pids(parent) == [child.pid]  # sub-cgroups are counted
        name = made.directory.name
        assert cgroup.of_unit(name) == made
        assert cgroup.of_unit(name.removesuffix(".service")) == made
    finally:
        child.kill()
        child.wait()


def test_a_unit_that_does_not_run_is_named_in_the_error() -> None:
    _v2_or_skip()
    with pytest.raises(cgroup.CgroupError, match=r"unit ka-never-\d+\.service: no cgroup"):
        cgroup.of_unit(f"ka-never-{os.getpid()}")


def test_ids_subtrees_and_lookups_by_id(made: cgroup.Cgroup) -> None:
    parent = cgroup.resolve(made.directory.parent)
    identifier = cgroup.cgroup_id(made)
    assert identifier == made.directory.stat().st_ino  # what BPF and bpftool call the cgroup id
    assert cgroup.subtree(parent) == [parent, made]
    assert cgroup.subtree(made) == [made]
    assert cgroup.by_id(identifier) == made
    assert cgroup.by_id(2**62) is None


def test_mount_points_by_filesystem_type(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "24 1 0:22 / /sys/fs/bpf rw - bpf bpf rw,mode=700\n"
        "25 1 0:23 /sub /srv/bpf rw - bpf bpf rw\n"  # a bind mount of a subdirectory: not the root
        "26 1 0:24 / /tmp/b\\040pf rw - bpf bpf rw\n"
    )
    assert cgroup.mount_points("bpf", info) == [Path("/sys/fs/bpf"), Path("/tmp/b pf")]
    assert cgroup.mount_points("cgroup2", info) == []


def test_sock_diag_names_the_cgroup_a_socket_belongs_to() -> None:
    """A socket belongs to the cgroup its process was in when it made it (no privilege needed)."""
    from ka.live import netns, sockdiag

    _v2_or_skip()
    here = cgroup.cgroup_id(cgroup.of_pid(os.getpid()))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        inode = os.fstat(listener.fileno()).st_ino
        found = [
            s
            for s in netns.run_in_netns_of(os.getpid(), lambda: sockdiag.tcp_sockets(["listen"]))
            if s.inode == inode
        ]
        assert [(s.family, s.state, s.local.port, s.cgroup_id) for s in found] == [
            ("ipv4", "listen", listener.getsockname()[1], here)
        ]
    with pytest.raises(ValueError, match="unknown TCP states"):
        sockdiag.tcp_sockets(["listening"])
