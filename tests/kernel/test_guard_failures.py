"""ka guard when something is missing or goes wrong, against the real kernel: no CAP_BPF, no
CAP_NET_ADMIN (setpriv), a kernel too old (setarch --uname-2.6), an exclusive attachment on a
parent cgroup, no BTF, a refused program, an attach interrupted at each step, a cgroup removed
under an attachment, a bpffs to mount; and the programs as the kernel disassembles them. Every
case ends with nothing attached and nothing pinned. Root only.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import ka
import ka.guard
from guard_helpers import attached_programs, guard, made_cgroup, unavailable
from helpers import POLICY
from ka.cli.checks import EXIT_REFUSED
from ka.guard import attachment, loader, pins, programs, sweeper, syscall
from ka.guard.asm import R0, R1, R2, R3, R6, Assembler, Program, W
from ka.guard.btf import Btf
from ka.guard.syscall import AttachType, MapType, ProgType
from live_helpers import ka_command

REASON = unavailable()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

POLICY_TEXT = str(POLICY)
NO_CAP_BPF = ["setpriv", "--bounding-set=-bpf,-sys_admin"]
NO_CAP_NET_ADMIN = ["setpriv", "--bounding-set=-net_admin,-sys_admin"]
OLD_KERNEL = ["setarch", platform.machine(), "--uname-2.6"]


def _nothing_left(cgroup_dir: Path, guard_bpffs: Path) -> None:
    assert attached_programs(cgroup_dir) == []
    top = guard_bpffs / "ka"
    assert not top.exists() or os.listdir(top) == [], os.listdir(top)


def _attach_refused(guard_bpffs: Path, prefix: list[str], expect: int, label: str) -> dict[str, Any]:
    with made_cgroup(label) as cgroup:
        error = guard(
            "attach",
            POLICY_TEXT,
            "--cgroup",
            cgroup.path,
            "--bpffs",
            str(guard_bpffs),
            expect=expect,
            prefix=prefix,
        )
        _nothing_left(cgroup.directory, guard_bpffs)
    return dict(error["error"])


def _run_python(prefix: list[str], code: str) -> str:
    """``code`` in a child Python under ``prefix``; its stderr (it is expected to fail)."""
    out = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0, out.stdout
    return out.stderr


def test_without_cap_bpf_nothing_is_attached(guard_bpffs: Path) -> None:
    error = _attach_refused(guard_bpffs, NO_CAP_BPF, 3, "nocapbpf")
    assert error["missing"] == "capabilities" and "needs CAP_BPF:" in error["message"], error
    # Not only ka's own check: the kernel itself refuses the map without CAP_BPF.
    stderr = _run_python(
        NO_CAP_BPF,
        "from ka.guard import loader, syscall\n"
        "loader.create_map(syscall.MapType.ARRAY, 4, 32, 1, 'ka_probe')",
    )
    assert "NotPermitted" in stderr and "refused to create the map" in stderr, stderr


def test_without_cap_net_admin_nothing_is_attached(guard_bpffs: Path) -> None:
    error = _attach_refused(guard_bpffs, NO_CAP_NET_ADMIN, 3, "nonetadmin")
    assert "needs CAP_NET_ADMIN:" in error["message"], error
    stderr = _run_python(
        NO_CAP_NET_ADMIN,
        "from ka.guard import loader, programs, syscall\n"
        "new = lambda: loader.create_map(syscall.MapType.ARRAY, 4, 48, 1, 'ka_probe')\n"
        "m = {'policy': new(), 'counters': new()}\n"
        "loader.load(programs.sock_ops_program(), syscall.ProgType.SOCK_OPS, 'ka_probe', m, "
        "expected_attach_type=syscall.AttachType.CGROUP_SOCK_OPS)",
    )
    assert "NotPermitted" in stderr and "refused to load" in stderr, stderr


def test_a_kernel_too_old_is_named(guard_bpffs: Path) -> None:
    error = _attach_refused(guard_bpffs, OLD_KERNEL, 4, "oldkernel")
    assert error["missing"] == "kernel" and re.search(r"kernel 2\.6\.\S+ is too old", error["message"]), error
    assert "5.9" in error["message"]


def test_an_exclusive_attachment_on_a_parent_refuses_with_its_name(guard_bpffs: Path) -> None:
    asm = Assembler()
    asm.mov(R0, 1)
    asm.exit()
    with made_cgroup("exclusive") as parent:
        child = parent.child("inner")
        other = loader.load(
            asm.assemble(),
            ProgType.SOCK_OPS,
            "other_tool",
            {},
            expected_attach_type=AttachType.CGROUP_SOCK_OPS,
        )
        parent_fd = os.open(parent.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            syscall.prog_attach(parent_fd, other.fd, AttachType.CGROUP_SOCK_OPS, 0)  # exclusive
            try:
                error = guard(
                    "attach",
                    POLICY_TEXT,
                    "--cgroup",
                    child.path,
                    "--bpffs",
                    str(guard_bpffs),
                    expect=EXIT_REFUSED,
                )
                _nothing_left(child.directory, guard_bpffs)
                assert len(attached_programs(parent.directory)) == 1  # the other tool's, untouched
            finally:
                syscall.prog_detach(parent_fd, other.fd, AttachType.CGROUP_SOCK_OPS)
        finally:
            os.close(parent_fd)
            other.close()
    message = error["error"]["message"]
    assert error["error"]["missing"] == "exclusive-attachment"
    assert f"its ancestor {parent.path}" in message and "BPF_F_ALLOW_MULTI" in message, message


# Where an attach can be cut: each step raises KeyboardInterrupt (Ctrl-C) instead of running.
def _nth_call(
    target: Any, name: str, n: int, test: Callable[..., bool] = lambda *a: True
) -> Callable[..., Any]:
    real = getattr(target, name)
    calls = [0]

    def cut(*args: Any, **kwargs: Any) -> Any:
        if test(*args):
            calls[0] += 1
            if calls[0] == n:
                raise KeyboardInterrupt
        return real(*args, **kwargs)

    return cut


STEPS: dict[str, Callable[[], tuple[Any, str, Callable[..., Any]]]] = {
    "counters map": lambda: (loader, "create_map", _nth_call(loader, "create_map", 2)),
    "program load": lambda: (loader, "load", _nth_call(loader, "load", 1)),
    "first pin": lambda: (syscall, "obj_pin", _nth_call(syscall, "obj_pin", 1)),
    "rename into place": lambda: (Path, "rename", _nth_call(Path, "rename", 1)),
    "link": lambda: (syscall, "link_create", _nth_call(syscall, "link_create", 1)),
    "link pin": lambda: (
        syscall,
        "obj_pin",
        _nth_call(syscall, "obj_pin", 1, lambda fd, path: path.endswith("/link")),
    ),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_an_attach_interrupted_at_any_step_leaves_nothing(
    guard_bpffs: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    with made_cgroup("cut") as cgroup:
        fds_before = len(os.listdir("/proc/self/fd"))
        target, name, replacement = STEPS[step]()
        monkeypatch.setattr(target, name, replacement)
        with pytest.raises(KeyboardInterrupt):
            ka.guard.attach(POLICY, cgroup.path, bpffs=guard_bpffs)
        monkeypatch.undo()
        _nothing_left(cgroup.directory, guard_bpffs)
        assert len(os.listdir("/proc/self/fd")) == fds_before  # every map, program and link closed
        assert ka.guard.status(cgroup.path, bpffs=guard_bpffs) is None


def test_a_refused_program_shows_the_verifiers_log() -> None:
    asm = Assembler()
    asm.exit()  # returns r0, which nothing set
    with pytest.raises(ka.guard.Refused) as info:
        loader.load(
            asm.assemble(), ProgType.SOCK_OPS, "ka_bad", {}, expected_attach_type=AttachType.CGROUP_SOCK_OPS
        )
    assert info.value.missing == "verifier" and "R0 !read_ok" in info.value.log
    assert "verifier log:" in str(info.value) and "R0 !read_ok" in str(info.value)


def test_without_btf_the_sweep_falls_back_and_says_why() -> None:
    with made_cgroup("nobtf") as cgroup:
        missing = Path("/nonexistent/vmlinux")
        report = sweeper.sweep(cgroup.cgroup, POLICY, btf_path=missing)
        assert report.method == "processes" and report.fallback_reason is not None
        assert str(missing) in report.fallback_reason, report.fallback_reason
        with pytest.raises(ka.guard.Unsupported) as info:
            sweeper.sweep(cgroup.cgroup, POLICY, method="iterator", btf_path=missing)
        assert info.value.missing == "btf"


def test_no_cgroup_v2_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def none() -> Path:
        raise ka.live.cgroup.CgroupError("no cgroup v2 hierarchy is mounted")

    monkeypatch.setattr(ka.live.cgroup, "cgroup2_mount", none)
    with pytest.raises(ka.guard.Unsupported) as info:
        ka.guard.target("/anything")
    assert info.value.missing == "cgroup2"


def test_a_bad_policy_is_refused_before_any_bpf_call(
    guard_bpffs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_call(*args: object) -> int:
        raise AssertionError("bpf(2) was called")

    monkeypatch.setattr(syscall, "bpf", no_call)
    with made_cgroup("badpolicy") as cgroup:
        with pytest.raises(ValueError, match="idle"):
            ka.guard.attach("idle=40000", cgroup.path, bpffs=guard_bpffs)
        out = ka_command("guard", "attach", "count=200", "--cgroup", cgroup.path, "--bpffs", str(guard_bpffs))
        assert out.returncode == 2 and "count" in out.stderr
        monkeypatch.undo()
        _nothing_left(cgroup.directory, guard_bpffs)


def test_a_removed_cgroup_shows_in_list_and_detach_clears_it(guard_bpffs: Path) -> None:
    with made_cgroup("removed") as cgroup:
        attached = guard("attach", POLICY_TEXT, "--cgroup", cgroup.path, "--bpffs", str(guard_bpffs))
        cgroup.directory.rmdir()  # the kernel detaches the program with the cgroup
    (listed,) = [
        a
        for a in guard("list", "--bpffs", str(guard_bpffs))["attachments"]
        if a["cgroup_id"] == attached["cgroup_id"]
    ]
    assert listed["state"] == "cgroup removed" and listed["cgroup"] is None
    guard("detach", "--cgroup-id", str(attached["cgroup_id"]), "--bpffs", str(guard_bpffs))
    assert not Path(attached["pins"]).exists()


def test_removing_the_pins_by_hand_detaches_as_the_page_says(guard_bpffs: Path) -> None:
    """docs/guard.md, "Removing an attachment by hand": the directory under ka/ is the cgroup
    directory's inode number, bpftool shows the program as ka_guard, attached with the multi
    flag, and ``rm -r`` of the directory detaches it (the link goes with its last pin)."""
    with made_cgroup("byhand") as cgroup:
        attached = guard("attach", POLICY_TEXT, "--cgroup", cgroup.path, "--bpffs", str(guard_bpffs))
        pins = Path(attached["pins"])
        assert pins.parent == guard_bpffs / "ka" and pins.name == str(os.stat(cgroup.directory).st_ino)
        assert len(attached_programs(cgroup.directory)) == 1
        if shutil.which("bpftool"):
            shown = subprocess.run(
                ["bpftool", "cgroup", "show", str(cgroup.directory)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert re.search(r"\bcgroup_sock_ops\s+multi\s+ka_guard\b", shown.stdout), shown
        subprocess.run(["rm", "-r", str(pins)], check=True, timeout=30)
        deadline = time.monotonic() + 5  # the kernel frees a link whose last pin went in a work item
        while attached_programs(cgroup.directory):
            assert time.monotonic() < deadline, "the program is still attached after rm -r of its pins"
            time.sleep(0.05)
        listed = guard("list", "--bpffs", str(guard_bpffs))["attachments"]
        assert [a for a in listed if a["cgroup_id"] == attached["cgroup_id"]] == []


def _kernel_listing(
    program: Program, prog_type: ProgType, maps: dict[str, loader.Fd], attach_type: int, btf_id: int = 0
) -> dict[int, str]:
    """The instructions as the kernel's verifier log (level 2) prints them, by index."""
    log = ctypes.create_string_buffer(1 << 22)
    code = program.encode({name: fd.fd for name, fd in maps.items()})
    fd = syscall.prog_load(
        prog_type,
        code,
        "ka_listing",
        expected_attach_type=attach_type,
        attach_btf_id=btf_id,
        log=log,
        log_level=2,
    )
    os.close(fd)
    found: dict[int, str] = {}
    for line in log.value.decode(errors="replace").splitlines():
        match = re.match(r"^\s*(\d+): (?:[.0-9]{10,} )?(\([0-9a-f]{2}\) .*)$", line)
        if match:
            found.setdefault(int(match.group(1)), match.group(2).strip())
    return found


def test_the_programs_are_what_the_kernel_disassembles() -> None:
    """Each instruction's opcode byte and text, as the kernel's verifier log prints what it
    loaded, equal ka's own listing (map addresses aside): the encoding is the kernel's."""
    layout = programs.iterator_layout(Btf.load())
    with (
        loader.create_map(MapType.ARRAY, 4, programs.POLICY.size, 1, "ka_policy") as policy,
        loader.create_map(MapType.PERCPU_ARRAY, 4, programs.COUNTERS.size, 1, "ka_counters") as counters,
        loader.create_map(MapType.HASH, 8, 1, 1, "ka_cgroups") as cgroups,
    ):
        maps = {"policy": policy, "counters": counters, "cgroups": cgroups}
        listings = {
            "sock_ops": (
                programs.sock_ops_program(),
                _kernel_listing(
                    programs.sock_ops_program(), ProgType.SOCK_OPS, maps, AttachType.CGROUP_SOCK_OPS
                ),
            ),
            "tcp iterator": (
                programs.iterator_program(layout),
                _kernel_listing(
                    programs.iterator_program(layout),
                    ProgType.TRACING,
                    maps,
                    AttachType.TRACE_ITER,
                    layout.iter_func_id,
                ),
            ),
        }
    for name, (program, kernel) in listings.items():
        if not kernel:
            pytest.skip("this kernel's verifier log prints no instructions")
        ours = dict(line.split(": ", 1) for line in program.listing().splitlines())
        assert {int(i) for i in ours} == set(kernel)
        for index, text in ours.items():
            theirs = kernel[int(index)]
            if "map[" in text:  # the kernel prints the map's address or id
                assert theirs.split("=")[0] == text.split("=")[0], (index, text, theirs)
            else:
                assert theirs == text, (index, text, theirs)
        print(f"\n{name} program: {len(program)} instructions, each as the kernel reads it")


def test_immediates_at_their_ends_are_what_the_kernel_disassembles() -> None:
    """32-bit immediates given as bit patterns (0xffffffff, 0x80000000) or negative, in moves and
    jumps, as the kernel's verifier log prints what it loaded: the sign is the kernel's."""
    asm = Assembler()
    asm.mov(R6, R1)
    asm.load(R2, R6, 0, W)  # ctx->op: unknown to the verifier, so it follows both ways of each jump
    asm.mov(R1, 0xFFFFFFFF)  # r1 = -1: the immediate is sign-extended
    asm.mov(R3, -(2**31))
    asm.jump_if(R2, "&", 0x80000000, "set")
    asm.jump_if(R2, "!=", 0xFFFFFFFF, "set")
    asm.mov(R0, 0)
    asm.exit()
    asm.label("set")
    asm.mov(R0, 1)
    asm.exit()
    program = asm.assemble()
    kernel = _kernel_listing(program, ProgType.SOCK_OPS, {}, AttachType.CGROUP_SOCK_OPS)
    if not kernel:
        pytest.skip("this kernel's verifier log prints no instructions")
    ours = {
        int(index): text for index, text in (line.split(": ", 1) for line in program.listing().splitlines())
    }
    assert ours == kernel
    assert ours[2] == "(b7) r1 = -1" and ours[4] == "(45) if r2 & 0x80000000 goto pc+3"


def test_attach_mounts_the_bpffs_when_none_is_mounted() -> None:
    default = pins.BPFFS
    # one run of this test at a time on the machine (CI runs the suite twice side by side): a
    # lock on the temporary directory itself, so nothing is left behind
    lock = os.open(tempfile.gettempdir(), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if pins.is_mounted(default):
            pytest.skip(f"a BPF filesystem is already mounted at {default}")
        _attach_mounting(default)
    finally:
        os.close(lock)
    assert not pins.is_mounted(default)


def _attach_mounting(default: Path) -> None:
    with made_cgroup("mount") as cgroup:
        try:
            attached = guard("attach", POLICY_TEXT, "--cgroup", cgroup.path)
            assert attached["mounted_bpffs"] and pins.is_mounted(default)
            assert Path(attached["pins"]).parent == default / "ka"
            (listed,) = guard("list")["attachments"]
            assert listed["cgroup"] == cgroup.path
            guard("detach", "--cgroup", cgroup.path)
        finally:
            ours = ka.guard.status(cgroup.path, bpffs=default) if pins.is_mounted(default) else None
            if ours is not None:
                attachment.detach(ours.cgroup_id, default)
            if pins.is_mounted(default):
                assert pins.unmount_if_empty(default), os.listdir(default)


def test_an_attach_killed_before_its_pins_moved_into_place_is_cleared_by_the_next(guard_bpffs: Path) -> None:
    """SIGKILL after the maps are pinned in the staging directory, before it is renamed into
    place: no program is attached, and the next attach (or detach) on that cgroup removes the
    staging directory's pins instead of leaving them for ever under ka/."""
    with made_cgroup("killed") as cgroup:
        killed = subprocess.run(
            [
                sys.executable,
                "-c",
                "import os, signal, pathlib, ka.guard\n"
                "pathlib.Path.rename = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
                f"ka.guard.attach({POLICY_TEXT!r}, {cgroup.path!r}, "
                f"bpffs=pathlib.Path({str(guard_bpffs)!r}))\n",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert killed.returncode == -9, killed.stderr
        cgroup_id = os.stat(cgroup.directory).st_ino
        (left,) = (guard_bpffs / "ka").glob(f"new-{cgroup_id}-*")
        assert sorted(p.name for p in left.iterdir()) == ["counters", "policy"]
        assert attached_programs(cgroup.directory) == []
        attached = guard("attach", POLICY_TEXT, "--cgroup", cgroup.path, "--bpffs", str(guard_bpffs))
        assert not left.exists() and attached["state"] == "attached"
        guard("detach", "--cgroup", cgroup.path, "--bpffs", str(guard_bpffs))
        assert list((guard_bpffs / "ka").glob(f"*{cgroup_id}*")) == []
