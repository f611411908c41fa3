"""ka.guard without the kernel: the assembler's encoding (bytes from the eBPF instruction-set
document's layout), labels and listings; the policy record and the counters; the BTF reader on a
blob built here (and on the running kernel's, against bpftool, where both are there); the
kernel-version and capability checks. The same programs against the real kernel are in
tests/kernel/test_guard_failures.py (the kernel's own disassembly).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import ka
from ka.guard import attachment, checks, programs
from ka.guard.asm import DW, FP, R0, R1, R2, R6, R8, Assembler, B, H, Helper, W
from ka.guard.btf import FUNC, INT, PTR, STRUCT, VMLINUX, Btf, BtfError
from ka.guard.errors import NotPermitted, Unsupported
from ka.guard.programs import Counters, PolicyRecord
from ka.protocol import Spec

LITTLE = sys.byteorder == "little"
little_endian = pytest.mark.skipif(not LITTLE, reason="the expected bytes are little-endian")


def _encoded(build: Callable[[Assembler], None]) -> bytes:
    """One instruction (or a two-slot map load, map fd 7) as bytes."""
    asm = Assembler()
    build(asm)
    asm.exit()
    return asm.assemble().encode({"policy": 7})[:-8]


ENCODINGS: dict[str, tuple[Callable[[Assembler], None], str]] = {
    # what, how, the bytes: opcode, dst (low nibble) and src, offset, imm (little-endian)
    "r0 = 1 (ALU64|MOV|K)": (lambda a: a.mov(R0, 1), "b7 00 0000 01000000"),
    "r6 = r1 (ALU64|MOV|X)": (lambda a: a.mov(R6, R1), "bf 16 0000 00000000"),
    "r2 = *(u32 *)(r6 +0) (LDX|MEM|W)": (lambda a: a.load(R2, R6, 0, W), "61 62 0000 00000000"),
    "*(u32 *)(r10 -4) = 0 (ST|MEM|W)": (lambda a: a.store(FP, -4, 0, W), "62 0a fcff 00000000"),
    "*(u64 *)(r10 -16) = r1 (STX|MEM|DW)": (lambda a: a.store(FP, -16, R1, DW), "7b 1a f0ff 00000000"),
    "lock *(u64 *)(r8 +0) += r1 (STX|ATOMIC|DW)": (lambda a: a.atomic_add(R8, 0, R1), "db 18 0000 00000000"),
    "r2 += -4 (ALU64|ADD|K)": (lambda a: a.add(R2, -4), "07 02 0000 fcffffff"),
    "call bpf_setsockopt (JMP|CALL)": (lambda a: a.call(Helper.setsockopt), "85 00 0000 31000000"),
    # imm is 32 bits, sign-extended by the CPU: 0xffffffff is written as the bit pattern of -1
    "r1 = 0xffffffff (ALU64|MOV|K)": (lambda a: a.mov(R1, 0xFFFFFFFF), "b7 01 0000 ffffffff"),
    "r1 = -2147483648 (ALU64|MOV|K)": (lambda a: a.mov(R1, -(2**31)), "b7 01 0000 00000080"),
    # off is 16 bits signed: both ends
    "r2 = *(u8 *)(r6 -32768) (LDX|MEM|B)": (lambda a: a.load(R2, R6, -(2**15), B), "71 62 0080 00000000"),
    "r2 = *(u16 *)(r6 +32767) (LDX|MEM|H)": (lambda a: a.load(R2, R6, 2**15 - 1, H), "69 62 ff7f 00000000"),
    "r1 = map (LD|DW|IMM, src 1)": (
        lambda a: a.load_map(R1, "policy"),
        "18 11 0000 07000000 00 00 0000 00000000",
    ),
}


@little_endian
@pytest.mark.parametrize("name", list(ENCODINGS))
def test_instructions_encode_as_the_instruction_set_lays_them_out(name: str) -> None:
    build, encoded = ENCODINGS[name]
    assert _encoded(build) == bytes.fromhex(encoded.replace(" ", ""))


@little_endian
def test_jumps_count_slots_from_the_next_one_and_a_map_load_takes_two() -> None:
    asm = Assembler()
    asm.jump_if(R2, "==", 4, "end")  # over the two slots of the map load and the mov
    asm.load_map(R1, "policy")
    asm.mov(R0, 0)
    asm.label("end")
    asm.exit()
    program = asm.assemble()
    assert program.labels == {"end": 4}
    assert program.encode({"policy": 3})[:8] == bytes.fromhex("1502030004000000")
    assert program.listing().splitlines() == [
        "0: (15) if r2 == 0x4 goto pc+3",
        "1: (18) r1 = map[policy]",
        "3: (b7) r0 = 0",
        "4: (95) exit",
    ]


@little_endian
def test_a_jump_on_two_registers_carries_both() -> None:
    asm = Assembler()
    asm.jump_if(R2, ">", R6, "end")  # JGT|X: the source register in the high nibble
    asm.mov(R0, 0)
    asm.label("end")
    asm.exit()
    program = asm.assemble()
    assert program.encode({})[:8] == bytes.fromhex("2d62010000000000")
    assert program.listing().splitlines()[0] == "0: (2d) if r2 > r6 goto pc+1"


def test_assembler_refuses_what_the_kernel_would() -> None:
    asm = Assembler()
    with pytest.raises(ValueError, match="immediate 4294967296"):
        asm.mov(R0, 2**32)
    with pytest.raises(ValueError, match="immediate -2147483649"):
        asm.mov(R0, -(2**31) - 1)
    for off in (40000, 2**15, -(2**15) - 1):  # beyond a signed 16-bit offset, by one at each end
        with pytest.raises(ValueError, match=f"offset {off} does not fit"):
            asm.load(R0, R1, off, W)
    asm.label("here")
    with pytest.raises(ValueError, match="defined twice"):
        asm.label("here")
    asm.jump("nowhere")
    asm.exit()
    with pytest.raises(ValueError, match="undefined label 'nowhere'"):
        asm.assemble()
    unfinished = Assembler()
    unfinished.mov(R0, 1)
    with pytest.raises(ValueError, match="must end with exit"):
        unfinished.assemble()
    with pytest.raises(ValueError, match=r"no descriptor for the program's maps \['policy'\]"):
        programs.sock_ops_program().encode({"counters": 4})


def _jump_over(slots: int, backward: bool) -> Assembler:
    """A jump across ``slots`` instructions: ahead to the exit, or back to the first slot."""
    asm = Assembler()
    asm.label("first")
    if not backward:
        asm.jump("last")
    for _ in range(slots):
        asm.mov(R0, 0)
    if backward:
        asm.jump("first")
    asm.label("last")
    asm.exit()
    return asm


@little_endian
def test_jumps_reach_as_far_as_16_signed_bits_and_no_further() -> None:
    ahead = _jump_over(2**15 - 1, backward=False).assemble()  # lands 32767 slots after the next one
    assert ahead.encode({})[:8] == bytes.fromhex("0500ff7f00000000")
    back = _jump_over(2**15 - 1, backward=True).assemble()  # back to slot 0 from slot 32767
    assert back.encode({})[-16:-8] == bytes.fromhex("0500008000000000")
    assert back.listing().splitlines()[-2] == "32767: (05) goto pc-32768"
    with pytest.raises(ValueError, match="jump to 'last' is 32768 slots away: beyond 16 bits"):
        _jump_over(2**15, backward=False).assemble()
    with pytest.raises(ValueError, match="jump to 'first' is -32769 slots away: beyond 16 bits"):
        _jump_over(2**15, backward=True).assemble()


def test_the_sock_ops_program_handles_only_the_two_established_callbacks() -> None:
    program = programs.sock_ops_program()
    lines = program.listing().splitlines()
    assert lines[1] == "1: (61) r2 = *(u32 *)(r6 +0)"  # ctx->op
    assert lines[2].endswith(f"if r2 == 0x{programs.ACTIVE_ESTABLISHED_CB:x} goto pc+1")
    assert f"if r2 != 0x{programs.PASSIVE_ESTABLISHED_CB:x}" in lines[3]
    assert program.maps == ["policy", "counters"]
    calls = [line.split("call ")[1] for line in lines if "call " in line]
    assert calls.count("bpf_setsockopt#49") == 5 and calls.count("bpf_getsockopt#57") == 1
    print(f"\nsock_ops program: {len(program)} instructions")


def test_a_policy_record_holds_the_policy_and_reads_back_as_it() -> None:
    for text in (
        "idle=33 interval=7 count=4 user_timeout=12.345",
        "within=30s",
        "idle=60",
        "off",
        "off user_timeout=5",
    ):
        policy = ka.KeepAlive.parse(text)
        record = programs.policy_record(policy, keep_own=text == "idle=60")
        back = PolicyRecord.unpack(record.pack())
        assert back == record and back.policy() == policy, text
        assert back.keep_own == (text == "idle=60")
    idle_only = programs.policy_record(ka.KeepAlive(idle=60))
    assert set(idle_only.values) == {ka.Option.KEEPALIVE, ka.Option.IDLE}  # the rest is left alone


def test_a_record_of_another_layout_is_refused() -> None:
    raw = bytearray(programs.policy_record(ka.KeepAlive(idle=60)).pack())
    raw[0] = 9
    with pytest.raises(ValueError, match="layout 9"):
        PolicyRecord.unpack(bytes(raw))


def test_values_linux_refuses_are_named_before_anything_is_loaded() -> None:
    class Stretched:  # a policy from a platform whose limits exceed Linux's
        spec = Spec(1, 40000, 10, 5, -1)

        def __str__(self) -> str:
            return "idle=40000 interval=10 count=5"

    with pytest.raises(ValueError, match=r"TCP_KEEPIDLE 40000 is outside what Linux takes \(1 to 32767\)"):
        programs.policy_record(Stretched())  # type: ignore[arg-type]


def test_per_cpu_counters_are_summed() -> None:
    cpus = [(3, 3, 0, 0, 0, 0), (2, 1, 0, 2, 22, 0)]
    counters = Counters.from_values(b"".join(programs.COUNTERS.pack(*c) for c in cpus))
    assert counters == Counters(handled=5, applied=4, kept_own=0, options_failed=2, last_error=22, seen=0)


def test_possible_cpus_reads_the_kernels_ranges(tmp_path: Path) -> None:
    possible = tmp_path / "possible"
    for text, n in (("0\n", 1), ("0-1\n", 2), ("0-3,8-11\n", 8)):
        possible.write_text(text)
        assert attachment.possible_cpus(possible) == n


def test_kernel_versions_and_what_each_piece_needs() -> None:
    assert checks.kernel_version("6.18.44-fc-v1252") == (6, 18)
    assert checks.kernel_version("2.6.78-fc-v1252") == (2, 6)  # what setarch --uname-2.6 reports
    checks.require_kernel("attach", "5.9.0")
    checks.require_kernel("iterator", "5.15.0-generic")
    with pytest.raises(Unsupported, match=r"kernel 5\.4\.0 is too old: .*5\.9 or later") as info:
        checks.require_kernel("attach", "5.4.0")
    assert info.value.missing == "kernel"
    with pytest.raises(Unsupported, match=r"bpf_getsockopt.*6\.1 or later"):
        checks.require_kernel("keep_own", "5.15.0")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="capability sets are Linux's")
def test_missing_capabilities_are_named() -> None:
    bit = {
        name: 1 << number
        for name, number in (("bpf", 39), ("perfmon", 38), ("net_admin", 12), ("sys_admin", 21))
    }
    checks.require_capabilities(mask=bit["bpf"] | bit["net_admin"])
    checks.require_capabilities(mask=bit["sys_admin"])  # stands for all of them
    checks.require_capabilities(mask=bit["bpf"] | bit["perfmon"], iterator=True)
    with pytest.raises(NotPermitted, match="needs CAP_BPF and CAP_NET_ADMIN:"):
        checks.require_capabilities(mask=0)
    with pytest.raises(NotPermitted, match="needs CAP_NET_ADMIN:"):
        checks.require_capabilities(mask=bit["bpf"])
    with pytest.raises(NotPermitted, match="tcp iterator needs CAP_PERFMON:"):
        checks.require_capabilities(mask=bit["bpf"] | bit["net_admin"], iterator=True)


# -- BTF -------------------------------------------------------------------------------------------
def _blob() -> bytes:
    """A small BTF: int; struct inner {int a; int b;}; struct outer {int x; union {int y; struct
    inner *p;}; unsigned flag:3 (a bit field); struct inner in;}; typedef; func bpf_iter_tcp."""
    names = ["", "int", "inner", "a", "b", "outer", "x", "y", "p", "flag", "in", "inner_t", "bpf_iter_tcp"]
    strings = b"\0".join(n.encode() for n in names) + b"\0"
    offset = {n: strings.index(b"\0" + n.encode() + b"\0") + 1 for n in names if n}
    types = b""

    def record(name: str, kind: int, vlen: int, size_or_type: int, flag: int = 0) -> bytes:
        return struct.pack("<III", offset.get(name, 0), flag << 31 | kind << 24 | vlen, size_or_type)

    def member(name: str, type_id: int, bits: int) -> bytes:
        return struct.pack("<III", offset.get(name, 0), type_id, bits)

    types += record("int", INT, 0, 4) + struct.pack("<I", 32)  # 1: int
    types += record("inner", STRUCT, 2, 8) + member("a", 1, 0) + member("b", 1, 32)  # 2
    types += record("", PTR, 0, 2)  # 3: struct inner *
    types += record("", 5, 2, 8) + member("y", 1, 0) + member("p", 3, 0)  # 4: anonymous union
    types += (
        record("outer", STRUCT, 4, 32, flag=1)  # 5: kind_flag: member offsets carry a bit-field size
        + member("x", 1, 0)
        + member("", 4, 64)
        + member("flag", 1, 3 << 24 | 128)
        + member("in", 7, 192)
    )
    types += record("", 13, 0, 0)  # 6: func proto
    types += record("inner_t", 8, 0, 2)  # 7: typedef struct inner inner_t
    types += record("bpf_iter_tcp", FUNC, 0, 6)  # 8
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


def test_btf_members_through_anonymous_unions_typedefs_and_pointers() -> None:
    btf = Btf(_blob())
    assert len(btf) == 8
    assert btf.member("outer", "x") == (0, 4, INT, None)
    assert btf.member("outer", "y") == (8, 4, INT, None)  # inside the anonymous union at byte 8
    assert btf.member("outer", "p") == (8, 8, PTR, "inner")
    assert btf.member("outer", "in.b") == (28, 4, INT, None)  # through the typedef
    assert btf.find("bpf_iter_tcp", FUNC) == 8
    assert btf.find("inner", STRUCT) == 2


def test_btf_names_what_is_missing() -> None:
    btf = Btf(_blob())
    with pytest.raises(BtfError, match=r"struct outer\.in has no member 'c' in this kernel"):
        btf.member("outer", "in.c")
    with pytest.raises(BtfError, match="no struct 'tcp_sock'"):
        btf.member("tcp_sock", "sk")
    with pytest.raises(BtfError, match="bit field"):
        btf.member("outer", "flag")
    with pytest.raises(BtfError, match="not BTF"):
        Btf(b"\0" * 32)
    with pytest.raises(BtfError, match="cannot read the kernel's BTF at /nonexistent"):
        Btf.load(Path("/nonexistent"))


def _bpftool_offset(dump: str, struct_name: str, member: str) -> int:
    lines = dump.splitlines()
    start = next(i for i, line in enumerate(lines) if f"STRUCT '{struct_name}' size=" in line)
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        if line.strip().startswith(f"'{member}' "):
            return int(line.split("bits_offset=")[1].split()[0]) // 8
    raise AssertionError(f"bpftool shows no {struct_name}.{member}")


@pytest.mark.skipif(
    shutil.which("bpftool") is None or not VMLINUX.exists(), reason="needs bpftool and the kernel's BTF"
)
def test_the_sweeps_offsets_match_bpftools_reading_of_this_kernel() -> None:
    dump = subprocess.run(
        ["bpftool", "btf", "dump", "file", str(VMLINUX)], check=True, capture_output=True, text=True
    ).stdout
    layout = programs.iterator_layout(Btf.load())
    sk_cgrp_data = _bpftool_offset(dump, "sock", "sk_cgrp_data")
    assert layout.cgroup == sk_cgrp_data + _bpftool_offset(
        dump, "sock_cgroup_data", "cgroup"
    )  # sock at 0 in tcp_sock
    assert layout.kn == _bpftool_offset(dump, "cgroup", "kn")
    assert layout.kn_id == _bpftool_offset(dump, "kernfs_node", "id")
    assert f"[{layout.iter_func_id}] FUNC 'bpf_iter_tcp'" in dump
