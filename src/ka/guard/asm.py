"""A small eBPF assembler: programs written as Python calls, encoded as the kernel reads them.

Every instruction is 8 bytes (``struct bpf_insn``, include/uapi/linux/bpf.h; the encoding is
Documentation/bpf/standardization/instruction-set.rst)::

    opcode:8   dst_reg:4   src_reg:4   offset:16 (signed)   imm:32 (signed)

in the host's byte order, with ``dst_reg`` in the low nibble on little-endian hosts. The opcode's
low three bits are the instruction class; for loads and stores the rest is the size and the
mode, for arithmetic and jumps the operation and whether the operand is a register (X) or the
immediate (K). A 64-bit immediate load (here only a map reference) takes two slots.

Jumps name labels; ``assemble`` turns them into slot offsets. Map references name maps;
``Program.encode`` puts their descriptors in. ``Program.listing`` prints the program in the
syntax of the kernel's verifier log (kernel/bpf/disasm.c), opcode bytes included, which is how
the tests compare what was assembled with what the kernel read.
"""

from __future__ import annotations

import enum
import struct
import sys
from collections.abc import Mapping
from typing import NamedTuple, Union

# Instruction classes (the opcode's low 3 bits).
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = range(8)
# Sizes of loads and stores.
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
SIZE_NAMES = {W: "u32", H: "u16", B: "u8", DW: "u64"}
# Modes of loads and stores.
IMM, MEM, ATOMIC = 0x00, 0x60, 0xC0
# Operand source for arithmetic and jumps: the immediate (K) or the source register (X).
K, X = 0x00, 0x08
# Arithmetic operations, with the verifier log's spelling.
ADD, SUB, MUL, OR, AND, LSH, RSH, XOR, MOV = 0x00, 0x10, 0x20, 0x40, 0x50, 0x60, 0x70, 0xA0, 0xB0
ALU_TEXT = {ADD: "+=", SUB: "-=", MUL: "*=", OR: "|=", AND: "&=", LSH: "<<=", RSH: ">>=", XOR: "^=", MOV: "="}
# Jump operations, with the verifier log's spelling of the conditions.
JA, JEQ, JGT, JGE, JSET, JNE, CALL, EXIT, JLT, JLE = (
    0x00,
    0x10,
    0x20,
    0x30,
    0x40,
    0x50,
    0x80,
    0x90,
    0xA0,
    0xB0,
)
CONDITIONS = {"==": JEQ, "!=": JNE, ">": JGT, ">=": JGE, "<": JLT, "<=": JLE, "&": JSET}
JUMP_TEXT = {op: text for text, op in CONDITIONS.items()}
# src_reg of a 64-bit immediate load whose imm is a map's descriptor.
PSEUDO_MAP_FD = 1

_LITTLE = sys.byteorder == "little"
_SLOT = struct.Struct("<BBhi" if _LITTLE else ">BBhi")


class Reg(enum.IntEnum):
    """The eleven registers: r0 return value, r1-r5 arguments (clobbered by calls), r6-r9 kept
    across calls, r10 the read-only frame pointer (the stack grows down from it, 512 bytes)."""

    R0 = 0
    R1 = 1
    R2 = 2
    R3 = 3
    R4 = 4
    R5 = 5
    R6 = 6
    R7 = 7
    R8 = 8
    R9 = 9
    R10 = 10

    def __str__(self) -> str:
        return f"r{self.value}"


R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = Reg
FP = R10


class Helper(enum.IntEnum):
    """The kernel helpers the programs call (``enum bpf_func_id``, ``__BPF_FUNC_MAPPER``)."""

    map_lookup_elem = 1
    setsockopt = 49
    getsockopt = 57
    skc_to_tcp_sock = 137


Operand = Union[Reg, int]


class Insn(NamedTuple):
    """One instruction slot. ``map_name``: the map a 64-bit load refers to (its first slot);
    ``target``: the label a jump goes to, until ``assemble`` resolves it into ``off``."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    map_name: str | None = None
    target: str | None = None

    def encode(self, imm: int | None = None) -> bytes:
        regs = (self.src << 4 | self.dst) if _LITTLE else (self.dst << 4 | self.src)
        return _SLOT.pack(self.code, regs, self.off, self.imm if imm is None else imm)

    def text(self) -> str:
        """The instruction as the kernel's verifier log prints it (without the index)."""
        cls, code = self.code & 0x07, self.code
        head = f"({code:02x})"
        if cls == ALU64:
            op = code & 0xF0
            source = f"r{self.src}" if code & X else str(self.imm)
            return f"{head} r{self.dst} {ALU_TEXT[op]} {source}"
        if cls == LDX:
            return f"{head} r{self.dst} = *({SIZE_NAMES[code & 0x18]} *)(r{self.src} {self.off:+d})"
        if cls == ST:
            return f"{head} *({SIZE_NAMES[code & 0x18]} *)(r{self.dst} {self.off:+d}) = {self.imm}"
        if cls == STX and code & 0xE0 == ATOMIC:
            where = f"*({SIZE_NAMES[code & 0x18]} *)(r{self.dst} {self.off:+d})"
            return f"{head} lock {where} += r{self.src}"
        if cls == STX:
            return f"{head} *({SIZE_NAMES[code & 0x18]} *)(r{self.dst} {self.off:+d}) = r{self.src}"
        if cls == LD:
            return f"{head} r{self.dst} = map[{self.map_name}]"
        op = code & 0xF0
        if op == EXIT:
            return f"{head} exit"
        if op == CALL:
            return f"{head} call bpf_{Helper(self.imm).name}#{self.imm}"
        if op == JA:
            return f"{head} goto pc{self.off:+d}"
        right = f"r{self.src}" if code & X else f"0x{self.imm & 0xFFFFFFFF:x}"
        return f"{head} if r{self.dst} {JUMP_TEXT[op]} {right} goto pc{self.off:+d}"


class Program(NamedTuple):
    """An assembled program: its slots, the maps it refers to by name, its labels' slots."""

    insns: tuple[Insn, ...]
    labels: Mapping[str, int]

    def __len__(self) -> int:
        return len(self.insns)

    @property
    def maps(self) -> list[str]:
        """The names of the maps the program loads, in first-use order."""
        return list(dict.fromkeys(i.map_name for i in self.insns if i.map_name is not None))

    def encode(self, map_fds: Mapping[str, int]) -> bytes:
        """The bytes the kernel loads, with each map reference set to ``map_fds[name]``."""
        missing = [name for name in self.maps if name not in map_fds]
        if missing:
            raise ValueError(f"no descriptor for the program's maps {missing}")
        return b"".join(i.encode(map_fds[i.map_name] if i.map_name else None) for i in self.insns)

    def listing(self) -> str:
        """One line per instruction, ``INDEX: (OPCODE) TEXT``, as the verifier log prints it
        (a map reference reads ``map[NAME]`` where the kernel prints ``map[id:N]``)."""
        lines = []
        second_slot = False
        for index, insn in enumerate(self.insns):
            if not second_slot:
                lines.append(f"{index}: {insn.text()}")
            second_slot = insn.code == LD | DW | IMM and not second_slot
        return "\n".join(lines)


class Assembler:
    """Builds a program one instruction at a time; ``assemble`` resolves the labels.

    Immediate operands are 32-bit signed; memory offsets 16-bit signed. A value out of range is
    a ``ValueError`` naming it, raised where the instruction is written.
    """

    def __init__(self) -> None:
        self._insns: list[Insn] = []
        self._labels: dict[str, int] = {}

    def _emit(self, insn: Insn) -> None:
        if not -(2**15) <= insn.off < 2**15:
            raise ValueError(f"offset {insn.off} does not fit the instruction's 16 bits")
        if not -(2**31) <= insn.imm < 2**32:
            raise ValueError(f"immediate {insn.imm} does not fit the instruction's 32 bits")
        imm = insn.imm - 2**32 if insn.imm >= 2**31 else insn.imm
        self._insns.append(insn._replace(dst=int(insn.dst), src=int(insn.src), imm=int(imm)))

    # -- data movement --------------------------------------------------------------------------
    def mov(self, dst: Reg, src: Operand) -> None:
        """dst = src (a register or an immediate), 64-bit."""
        self.alu(MOV, dst, src)

    def alu(self, op: int, dst: Reg, src: Operand) -> None:
        """dst OP= src, 64-bit: ``op`` is ADD, SUB, MUL, OR, AND, LSH, RSH, XOR or MOV."""
        if isinstance(src, Reg):
            self._emit(Insn(ALU64 | op | X, dst, src))
        else:
            self._emit(Insn(ALU64 | op | K, dst, 0, 0, src))

    def add(self, dst: Reg, src: Operand) -> None:
        self.alu(ADD, dst, src)

    def and_(self, dst: Reg, src: Operand) -> None:
        self.alu(AND, dst, src)

    def load(self, dst: Reg, base: Reg, off: int, size: int) -> None:
        """dst = *(size *)(base + off)."""
        self._emit(Insn(LDX | MEM | size, dst, base, off))

    def store(self, base: Reg, off: int, src: Operand, size: int) -> None:
        """*(size *)(base + off) = src (a register, or an immediate for ST)."""
        if isinstance(src, Reg):
            self._emit(Insn(STX | MEM | size, base, src, off))
        else:
            self._emit(Insn(ST | MEM | size, base, 0, off, src))

    def atomic_add(self, base: Reg, off: int, src: Reg, size: int = DW) -> None:
        """lock *(size *)(base + off) += src (BPF_ATOMIC with imm BPF_ADD)."""
        self._emit(Insn(STX | ATOMIC | size, base, src, off, ADD))

    def load_map(self, dst: Reg, name: str) -> None:
        """dst = the map called ``name`` (a 64-bit immediate load of its descriptor)."""
        self._emit(Insn(LD | DW | IMM, dst, PSEUDO_MAP_FD, map_name=name))
        self._emit(Insn(0))

    # -- control flow ---------------------------------------------------------------------------
    def label(self, name: str) -> None:
        """Name the next instruction's slot."""
        if name in self._labels:
            raise ValueError(f"label {name!r} is defined twice")
        self._labels[name] = len(self._insns)

    def jump(self, target: str) -> None:
        """goto target."""
        self._emit(Insn(JMP | JA, target=target))

    def jump_if(self, dst: Reg, condition: str, src: Operand, target: str) -> None:
        """if dst CONDITION src goto target; ``condition`` is ==, !=, >, >=, <, <= or & (64-bit,
        unsigned)."""
        op = CONDITIONS[condition]
        if isinstance(src, Reg):
            self._emit(Insn(JMP | op | X, dst, src, target=target))
        else:
            self._emit(Insn(JMP | op | K, dst, 0, 0, src, target=target))

    def call(self, helper: Helper) -> None:
        """r0 = helper(r1, ..., r5); r1-r5 are clobbered."""
        self._emit(Insn(JMP | CALL, imm=int(helper)))

    def exit(self) -> None:
        """Return r0."""
        self._emit(Insn(JMP | EXIT))

    def assemble(self) -> Program:
        """The program, every jump's label turned into the offset from the next slot."""
        insns = []
        for index, insn in enumerate(self._insns):
            if insn.target is not None:
                if insn.target not in self._labels:
                    raise ValueError(f"jump to undefined label {insn.target!r}")
                off = self._labels[insn.target] - index - 1
                if not -(2**15) <= off < 2**15:
                    raise ValueError(f"jump to {insn.target!r} is {off} slots away: beyond 16 bits")
                insn = insn._replace(off=off)
            insns.append(insn)
        if not insns or insns[-1].code != JMP | EXIT:
            raise ValueError("a program must end with exit")
        return Program(tuple(insns), dict(self._labels))
