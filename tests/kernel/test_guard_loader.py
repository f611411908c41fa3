"""ka.guard.loader against the real kernel: descriptors closed once (descriptor 0 included), the
kernel's refusals with their errno (EPERM naming the capabilities, the verifier's verdict with its
log, whole, cut or absent), and RLIMIT_MEMLOCK raised only where the kernel still charges it
(before 5.11, simulated with setarch --uname-2.6). Root only; nothing is attached or pinned.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from guard_helpers import unavailable
from ka.guard import loader
from ka.guard.asm import R0, Assembler, Program
from ka.guard.errors import Refused
from ka.guard.syscall import AttachType, MapType, ProgType

REASON = unavailable()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

OLD_KERNEL = ["setarch", platform.machine(), "--uname-2.6"]  # uname says 2.6: before memcg accounting
NO_CAP_BPF = ["setpriv", "--bounding-set=-bpf,-sys_admin"]
NO_CAP_SYS_RESOURCE = ["setpriv", "--bounding-set=-sys_resource"]


def _returns(value: int) -> Program:
    asm = Assembler()
    asm.mov(R0, value)
    asm.exit()
    return asm.assemble()


def _unset_r0() -> Program:
    asm = Assembler()
    asm.exit()  # returns r0, which nothing set: the verifier refuses with EACCES
    return asm.assemble()


def _child(prefix: list[str], code: str) -> Any:
    """``code`` in a child Python under ``prefix``; the JSON it prints last."""
    done = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_a_descriptor_closes_once_and_names_what_it_held() -> None:
    owned = loader.create_map(MapType.ARRAY, 4, 8, 1, "ka_once")
    number = owned.fileno()
    assert repr(owned) == f"Fd({number}, 'map ka_once')"
    owned.close()
    assert owned.fd == -1 and repr(owned) == "Fd(-1, 'map ka_once')"
    with pytest.raises(OSError) as gone:
        os.fstat(number)
    assert gone.value.errno == errno.EBADF
    with pytest.raises(ValueError, match="the descriptor of map ka_once is closed"):
        owned.fileno()
    reused = os.open(os.devnull, os.O_RDONLY)  # the lowest free number: likely the map's old one
    try:
        owned.close()  # a second close closes nothing, whatever holds that number now
        os.fstat(reused)
    finally:
        os.close(reused)


def test_descriptor_zero_is_held_and_closed_like_any_other() -> None:
    """A process started with stdin closed gets its first BPF object on descriptor 0."""
    got = _child(
        [],
        "import json, os\n"
        "from ka.guard import loader, syscall\n"
        "os.close(0)\n"
        "owned = loader.create_map(syscall.MapType.ARRAY, 4, 8, 1, 'ka_zero')\n"
        "number = owned.fileno()\n"
        "owned.close()\n"
        "try:\n"
        "    os.fstat(0)\n"
        "    still_open = True\n"
        "except OSError:\n"
        "    still_open = False\n"
        "print(json.dumps({'fd': number, 'open_after_close': still_open}))\n",
    )
    assert got == {"fd": 0, "open_after_close": False}


def test_the_kernels_eperm_names_the_capabilities_with_its_errno() -> None:
    """Without CAP_BPF the kernel itself refuses the map and the load (ka's own check is not
    asked here): both are NotPermitted, key ``capabilities``, errno EPERM, naming what is needed."""
    errors = _child(
        NO_CAP_BPF,
        "import json\n"
        "from ka.guard import loader, syscall\n"
        "from ka.guard.asm import Assembler, R0\n"
        "from ka.guard.errors import GuardError\n"
        "asm = Assembler()\n"
        "asm.mov(R0, 1)\n"
        "asm.exit()\n"
        "tries = [\n"
        "    lambda: loader.create_map(syscall.MapType.ARRAY, 4, 8, 1, 'ka_perm'),\n"
        "    lambda: loader.load(asm.assemble(), syscall.ProgType.SOCK_OPS, 'ka_perm', {},\n"
        "                        expected_attach_type=syscall.AttachType.CGROUP_SOCK_OPS),\n"
        "]\n"
        "out = []\n"
        "for attempt in tries:\n"
        "    try:\n"
        "        attempt().close()\n"
        "        out.append(None)\n"
        "    except GuardError as exc:\n"
        "        out.append([type(exc).__name__, exc.missing, exc.errno, str(exc)])\n"
        "print(json.dumps(out))\n",
    )
    for (kind, missing, number, message), what in zip(
        errors, ("create the map ka_perm", "load the ka_perm program"), strict=True
    ):
        assert (kind, missing, number) == ("NotPermitted", "capabilities", errno.EPERM), message
        assert message.startswith(f"the kernel refused to {what} (bpf("), message
        assert "Operation not permitted" in message, message
        assert (
            "ka guard needs root, with CAP_BPF and CAP_NET_ADMIN (CAP_PERFMON too for the sweep's "
            "iterator), and no lockdown or LSM forbidding BPF" in message
        ), message


def test_a_loaded_program_names_itself() -> None:
    attach = AttachType.CGROUP_SOCK_OPS
    with loader.load(_returns(1), ProgType.SOCK_OPS, "ka_named", {}, expected_attach_type=attach) as prog:
        number = prog.fileno()
        assert repr(prog) == f"Fd({number}, 'program ka_named')"
        assert os.readlink(f"/proc/self/fd/{number}") == "anon_inode:bpf-prog"


def test_a_refusal_carries_the_verifiers_errno_and_log() -> None:
    with pytest.raises(Refused) as info:
        loader.load(
            _unset_r0(), ProgType.SOCK_OPS, "ka_bad", {}, expected_attach_type=AttachType.CGROUP_SOCK_OPS
        )
    refused = info.value
    assert (refused.missing, refused.errno) == ("verifier", errno.EACCES)
    assert str(refused).startswith(
        "the kernel refused the ka_bad program (1 instructions): bpf(PROG_LOAD) ka_bad: Permission denied\n"
        "verifier log:\n"
    ), str(refused)
    assert "R0 !read_ok" in refused.log and str(refused).endswith(refused.log)


def test_a_log_longer_than_the_buffer_keeps_the_verdict_and_says_it_was_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A log that does not fit makes the kernel answer ENOSPC instead of its verdict: the error
    keeps the verdict (EACCES here) and says the log is partial. Regression: the errno and the
    message were ENOSPC, 'No space left on device'."""
    monkeypatch.setattr(loader, "LOG_SIZE", 64)
    with pytest.raises(Refused) as info:
        loader.load(
            _unset_r0(), ProgType.SOCK_OPS, "ka_cut", {}, expected_attach_type=AttachType.CGROUP_SOCK_OPS
        )
    refused = info.value
    assert refused.errno == errno.EACCES, str(refused)
    assert ": Permission denied\nverifier log (longer than 64 bytes: the kernel kept part of it):\n" in str(
        refused
    ), str(refused)
    assert 0 < len(refused.log) < 64


def test_a_refusal_before_the_verifier_runs_says_there_is_no_log() -> None:
    """An iterator program whose attach point is beyond any BTF id (a corrupt layout): EINVAL
    from bpf(2) before the verifier starts, so no log. (An id merely missing from this kernel's
    BTF is the verifier's to refuse, and it says so in its log.)"""
    beyond = 1 << 20  # past BTF_MAX_TYPE (0xfffff): bpf_prog_load_check_attach refuses it itself
    with pytest.raises(Refused) as info:
        loader.load(
            _returns(0),
            ProgType.TRACING,
            "ka_nowhere",
            {},
            expected_attach_type=AttachType.TRACE_ITER,
            attach_btf_id=beyond,
        )
    refused = info.value
    assert (refused.errno, refused.log) == (errno.EINVAL, ""), str(refused)
    assert str(refused).endswith(": Invalid argument (the verifier wrote no log)"), str(refused)


# The soft limit at 64 KiB (the old default), the hard one left as it is; the limits after a map.
MEMLOCK_CHILD = (
    "import json, resource\n"
    "from ka.guard import loader, syscall\n"
    "hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]\n"
    "resource.setrlimit(resource.RLIMIT_MEMLOCK, (65536, hard))\n"
    "with loader.create_map(syscall.MapType.ARRAY, 4, 8, 1, 'ka_memlock'):\n"
    "    pass\n"
    "print(json.dumps([hard, resource.getrlimit(resource.RLIMIT_MEMLOCK)]))\n"
)


def _has_cap_sys_resource() -> bool:
    status = Path("/proc/self/status").read_text().splitlines()
    effective = next(line for line in status if line.startswith("CapEff:"))
    return bool(int(effective.split()[1], 16) >> 24 & 1)  # CAP_SYS_RESOURCE is 24


def test_memlock_is_raised_only_where_the_kernel_charges_it() -> None:
    """Before 5.11 (uname says 2.6 here) to unlimited, or to the hard limit where the process may
    not raise that (this sandbox has no CAP_SYS_RESOURCE; CI's root has it); on this kernel,
    which charges the memory cgroup instead, it is left alone."""
    hard, limits = _child(OLD_KERNEL, MEMLOCK_CHILD)
    most = resource.RLIM_INFINITY if _has_cap_sys_resource() else hard
    assert limits == [most, most]
    hard, limits = _child([], MEMLOCK_CHILD)
    assert limits == [65536, hard]


def test_memlock_that_cannot_be_raised_is_left_to_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without CAP_SYS_RESOURCE only the soft limit goes up, to the hard one; where setrlimit is
    refused outright (a seccomp or container policy: OSError), ka goes on and the kernel decides
    (here it charges memory cgroups, so the map is made)."""
    hard, limits = _child([*NO_CAP_SYS_RESOURCE, *OLD_KERNEL], MEMLOCK_CHILD)
    assert limits == [hard, hard]

    calls = []

    def refused(resource_id: int, limits: tuple[int, int]) -> None:
        calls.append(limits)
        raise OSError(errno.ENOSYS, "setrlimit is not allowed here")

    monkeypatch.setattr(loader, "kernel_version", lambda: (5, 10))
    monkeypatch.setattr(resource, "setrlimit", refused)
    with loader.create_map(MapType.ARRAY, 4, 8, 1, "ka_memlock") as made:
        assert made.fileno() >= 0
    assert calls == [(resource.RLIM_INFINITY,) * 2, (resource.getrlimit(resource.RLIMIT_MEMLOCK)[1],) * 2]
