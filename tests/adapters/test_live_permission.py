"""ka.live's permission messages against a /proc tree the test writes: each cause the kernel's
ptrace checks have (uids, gids, dumpable, capabilities, user namespace, Yama's scopes), the
CAP_SYS_PTRACE bit that overrides them, and the remedy offered, asserted word for word."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

import ka
from ka import live
from ka.live import procfs, sockdiag

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ka.live is Linux only")

PID = 4242
PTRACE = 1 << live.CAP_SYS_PTRACE
HEAD = f"ka needs ptrace permission over process {PID} (redis-server): "


class FakeProc:
    """A /proc with this process (``self``) and process ``PID``, and the knobs the checks read."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        monkeypatch.setattr(procfs, "PROC", root)
        (root / "sys/kernel/yama").mkdir(parents=True)
        (root / "self/ns").mkdir(parents=True)
        (root / str(PID) / "ns").mkdir(parents=True)
        (root / str(PID) / "comm").write_text("redis-server\n")
        (root / "self/ns/user").write_text("")
        os.link(root / "self/ns/user", root / str(PID) / "ns/user")  # same inode: same namespace
        self.root_here = real_euid = os.geteuid() == 0
        self.me(uid=1000, gid=1000, eff=0)
        if not real_euid:  # /proc/PID cannot be given to another uid: the owner is reported as dumpable
            monkeypatch.setattr(procfs, "_proc_owner", lambda pid: int(self._euid_of_target()))
        self.target(uid=1000, gid=1000, prm=0)
        monkeypatch.setattr(os, "geteuid", lambda: self.uid)
        monkeypatch.setattr(os, "getegid", lambda: self.gid)

    def _status(self, name: str, uids: tuple[int, ...], gids: tuple[int, ...], eff: int, prm: int) -> None:
        lines = [
            "Name:\tx",
            f"PPid:\t{1}",
            "Uid:\t" + "\t".join(map(str, uids)),
            "Gid:\t" + "\t".join(map(str, gids)),
            f"CapPrm:\t{prm:016x}",
            f"CapEff:\t{eff:016x}",
        ]
        (self.root / name / "status").write_text("\n".join(lines) + "\n")

    def me(self, uid: int, gid: int, eff: int, prm: int | None = None) -> None:
        self.uid, self.gid = uid, gid
        self._status("self", (uid,) * 4, (gid,) * 4, eff, eff if prm is None else prm)

    def target(self, uid: int | tuple[int, ...], gid: int, prm: int) -> None:
        uids = (uid,) * 4 if isinstance(uid, int) else uid
        self._status(str(PID), uids, (gid,) * 4, prm, prm)
        self.owner(uids[1])  # the kernel gives /proc/PID to the effective uid of a dumpable process

    def owner(self, uid: int) -> None:
        if self.root_here:
            os.chown(self.root / str(PID), uid, -1)

    def _euid_of_target(self) -> int:
        return procfs.status_value(PID, "Uid", 1) or 0

    def scope(self, value: int | None) -> None:
        path = self.root / "sys/kernel/yama/ptrace_scope"
        if value is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(f"{value}\n")

    def other_user_namespace(self) -> int:
        (self.root / str(PID) / "ns/user").unlink()
        (self.root / str(PID) / "ns/user").write_text("")
        return os.stat(self.root / str(PID) / "ns/user").st_ino


@pytest.fixture
def proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeProc:
    return FakeProc(tmp_path, monkeypatch)


def test_another_user_without_cap_sys_ptrace(proc: FakeProc) -> None:
    proc.target(uid=0, gid=0, prm=0)
    assert live.permission_message(PID) == HEAD + (
        "it runs as uid 0 and ka as uid 1000; ka has no CAP_SYS_PTRACE. "
        "To reach it, run ka with CAP_SYS_PTRACE (sudo), or run ka as uid 0."
    )


def test_capabilities_the_process_holds_and_ka_lacks(proc: FakeProc) -> None:
    # Root without CAP_SYS_PTRACE (a container, capsh) against root holding it: not "run as root".
    proc.me(uid=0, gid=0, eff=0b1)  # cap_chown only
    proc.target(uid=0, gid=0, prm=0b1 | PTRACE | 1 << 21)
    assert live.permission_message(PID) == HEAD + (
        "it holds capabilities ka lacks (cap_sys_ptrace, cap_sys_admin); ka has no CAP_SYS_PTRACE "
        "though it runs as root. To reach it, give ka CAP_SYS_PTRACE (this root process runs without "
        "it: a container's, capsh's or systemd's CapabilityBoundingSet narrowed it), or run ka with "
        "every capability it holds."
    )


def test_capabilities_ka_holds_too_are_no_cause(proc: FakeProc) -> None:
    # theirs & ~mine is empty: the bits ka holds are not listed, and no capability cause is given.
    proc.me(uid=0, gid=0, eff=0b111)
    proc.target(uid=0, gid=0, prm=0b101)
    causes, _ = procfs.ptrace_obstacles(PID)
    assert causes == ["ka has no CAP_SYS_PTRACE though it runs as root"]


def test_only_permitted_capabilities_count_as_held(proc: FakeProc) -> None:
    # Effective but not permitted (it cannot be, but the mask must be the intersection): lacking.
    proc.me(uid=0, gid=0, eff=0b11, prm=0b01)
    proc.target(uid=0, gid=0, prm=0b10)
    causes, _ = procfs.ptrace_obstacles(PID)
    assert causes[0] == "it holds capabilities ka lacks (cap_dac_override)"


def test_many_capabilities_are_summed_up(proc: FakeProc) -> None:
    proc.target(uid=1000, gid=1000, prm=0b111111)
    causes, _ = procfs.ptrace_obstacles(PID)
    assert causes[0] == (
        "it holds capabilities ka lacks (cap_chown, cap_dac_override, cap_dac_read_search, cap_fowner "
        "and 2 more)"
    )


@pytest.mark.parametrize("others", [1 << (live.CAP_SYS_PTRACE - 1), 1 << (live.CAP_SYS_PTRACE + 1)])
def test_the_neighbours_of_the_cap_sys_ptrace_bit_do_not_count(proc: FakeProc, others: int) -> None:
    proc.me(uid=1000, gid=1000, eff=others)
    proc.target(uid=0, gid=0, prm=0)
    assert procfs.ptrace_obstacles(PID).causes[-1] == "ka has no CAP_SYS_PTRACE"


@pytest.mark.parametrize("dac", [0, 1 << 3])  # none, or cap_fowner (a neighbour that does not count)
def test_another_user_with_cap_sys_ptrace_but_no_dac_read_search(proc: FakeProc, dac: int) -> None:
    # Verified on Linux 6.18: root with CAP_SYS_PTRACE but without CAP_DAC_READ_SEARCH and
    # CAP_DAC_OVERRIDE cannot list /proc/PID/fd of a process of another uid (EACCES).
    proc.me(uid=0, gid=0, eff=PTRACE | dac)
    proc.target(uid=65534, gid=65534, prm=0)
    assert live.permission_message(PID) == HEAD + (
        "it runs as uid 65534 and ka as uid 0, and listing another user's /proc/PID/fd needs "
        "CAP_DAC_READ_SEARCH (or CAP_DAC_OVERRIDE), which ka lacks. To reach it, give ka "
        "CAP_DAC_READ_SEARCH besides CAP_SYS_PTRACE."
    )


@pytest.mark.parametrize("dac", [1 << 1, 1 << 2])
def test_with_cap_sys_ptrace_the_cause_is_a_security_module(proc: FakeProc, dac: int) -> None:
    proc.me(uid=0, gid=0, eff=PTRACE | dac)
    proc.target(uid=1000, gid=1000, prm=0b1111)  # another uid and more capabilities: both overridden
    assert live.permission_message(PID) == HEAD + (
        "ka holds CAP_SYS_PTRACE, so a security module (AppArmor, SELinux) or a seccomp filter "
        "refused it. To reach it, allow ptrace (read and attach) of this process in that policy."
    )


@pytest.mark.parametrize(
    ("scope", "cause", "remedy"),
    [
        (None, None, "run ka with CAP_SYS_PTRACE (sudo)."),
        (0, None, "run ka with CAP_SYS_PTRACE (sudo)."),
        (
            1,
            "kernel.yama.ptrace_scope is 1: only a process's ancestors may reach it",
            "run ka with CAP_SYS_PTRACE (sudo), or run ka with kernel.yama.ptrace_scope set to 0.",
        ),
        (
            2,
            "kernel.yama.ptrace_scope is 2: only holders of CAP_SYS_PTRACE may reach another process",
            "run ka with CAP_SYS_PTRACE (sudo).",
        ),
    ],
)
def test_yama_scopes_without_cap_sys_ptrace(
    proc: FakeProc, scope: int | None, cause: str | None, remedy: str
) -> None:
    proc.scope(scope)
    # Same user, no capabilities: only Yama (and the missing CAP_SYS_PTRACE) can stand in the way.
    expected = ([cause] if cause else []) + ["ka has no CAP_SYS_PTRACE"]
    assert live.permission_message(PID) == HEAD + "; ".join(expected) + ". To reach it, " + remedy


def test_scope_1_lets_an_ancestor_in(proc: FakeProc) -> None:
    proc.scope(1)
    status = proc.root / str(PID) / "status"
    status.write_text(status.read_text().replace("PPid:\t1", f"PPid:\t{os.getpid()}"))
    assert procfs.ptrace_obstacles(PID).causes == ["ka has no CAP_SYS_PTRACE"]


@pytest.mark.parametrize("eff", [0, PTRACE])
def test_scope_3_refuses_everyone(proc: FakeProc, eff: int) -> None:
    proc.me(uid=0, gid=0, eff=eff)
    proc.scope(3)
    assert live.permission_message(PID) == HEAD + (
        "kernel.yama.ptrace_scope is 3: no process may reach another's, root included. To reach it, "
        "reboot: nothing else lowers kernel.yama.ptrace_scope from 3."
    )


def test_a_set_user_id_program(proc: FakeProc) -> None:
    proc.target(uid=(1000, 0, 0), gid=1000, prm=0)
    causes, remedy = procfs.ptrace_obstacles(PID)
    assert causes == [
        "it runs with uids 1000 (real), 0 (effective) and 0 (saved), a set-user-id program, and ka as "
        "uid 1000",
        "ka has no CAP_SYS_PTRACE",
    ]
    assert remedy == "run ka with CAP_SYS_PTRACE (sudo)"  # no uid reaches it without the capability


def test_another_group(proc: FakeProc) -> None:
    proc.target(uid=1000, gid=5, prm=0)
    causes, remedy = procfs.ptrace_obstacles(PID)
    assert causes[0] == "it runs with gid 5 and ka with gid 1000"
    assert remedy == "run ka with CAP_SYS_PTRACE (sudo)"


@pytest.mark.skipif(os.geteuid() != 0, reason="the fake /proc/PID must be owned by root, another uid")
def test_a_process_that_is_not_dumpable(proc: FakeProc) -> None:
    # Same uid as ka, but /proc/PID belongs to root: the kernel does that for a non-dumpable process.
    proc.owner(0)
    causes, remedy = procfs.ptrace_obstacles(PID)
    assert causes == [
        "it is not dumpable (a set-id program, or prctl(PR_SET_DUMPABLE, 0))",
        "ka has no CAP_SYS_PTRACE",
    ]
    assert remedy == "run ka with CAP_SYS_PTRACE (sudo)"


def test_another_user_namespace(proc: FakeProc) -> None:
    inode = proc.other_user_namespace()
    proc.me(uid=0, gid=0, eff=0)
    proc.target(uid=0, gid=0, prm=0)
    causes, remedy = procfs.ptrace_obstacles(PID)
    assert causes == [
        f"it runs in another user namespace (user:[{inode}])",
        "ka has no CAP_SYS_PTRACE though it runs as root",
    ]
    assert remedy.startswith("give ka CAP_SYS_PTRACE") and ", or" not in remedy


def test_unreadable_causes_are_left_out(proc: FakeProc) -> None:
    (proc.root / str(PID) / "status").unlink()  # another user's status that cannot be read
    assert live.permission_message(PID) == HEAD + (
        "ka has no CAP_SYS_PTRACE. To reach it, run ka with CAP_SYS_PTRACE (sudo)."
    )


def test_sock_diag_lists_what_proc_net_tcp_lists(pair: tuple[socket.socket, socket.socket]) -> None:
    # Real kernel, this test's own sockets (others on the machine change between two reads): the
    # netlink table equals /proc's, field by field, timers within a second.
    ka.apply(pair[1], ka.KeepAlive(50, 5, 3))
    inodes = {os.fstat(s.fileno()).st_ino for s in pair}
    netlink, proc = sockdiag.dump(inodes=inodes), procfs.tcp_table(None, inodes)
    assert set(netlink) == set(proc) == inodes
    for inode, entry in proc.items():
        other = netlink[inode]
        assert other._replace(timer=entry.timer) == entry
        assert other.timer.name == entry.timer.name and abs(other.timer.expires - entry.timer.expires) < 1
    mine = os.fstat(pair[1].fileno()).st_ino
    assert netlink[mine].timer.name == "keepalive" and 48 < netlink[mine].timer.expires <= 50
    assert set(sockdiag.dump(states=["listen"], inodes=inodes)) == set()  # filtered in the kernel
