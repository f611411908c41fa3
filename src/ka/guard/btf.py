"""The running kernel's BTF (``/sys/kernel/btf/vmlinux``): only what the sweep needs.

BTF is the kernel's own description of its types (Documentation/bpf/btf.rst). The sweep's
iterator program reads a socket's cgroup through kernel structures whose layout changes from
build to build, so it takes their offsets from here, and the iterator's type id
(``bpf_iter_tcp``) for the load.

The format: a header (magic 0xeB9F, version 1, the type and string sections' offsets), then
type records, numbered from 1 in order. Each record is ``name_off, info, size_or_type`` (three
u32; ``info`` holds the kind in bits 24-28, the member count in bits 0-15, and a flag in bit 31)
followed by data whose length depends on the kind. Only structs, unions and functions are
indexed by name; the rest is walked through when a member's type is resolved.
"""

from __future__ import annotations

import array
import struct
from pathlib import Path
from typing import NamedTuple

VMLINUX = Path("/sys/kernel/btf/vmlinux")
MAGIC = 0xEB9F

# BTF_KIND_* (include/uapi/linux/btf.h)
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
# Bytes of data after the 12-byte record: fixed, or per member (times vlen).
_FIXED_EXTRA = {INT: 4, ARRAY: 12, VAR: 4, DECL_TAG: 4}
_PER_MEMBER = {STRUCT: 12, UNION: 12, ENUM: 8, FUNC_PROTO: 8, DATASEC: 12, ENUM64: 12}
# Kinds that only qualify another type: resolved through to it.
_QUALIFIERS = {TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG}
_HEADER = struct.Struct("<HBBIIIII")
_RECORD = struct.Struct("<III")
_MEMBER = struct.Struct("<III")
POINTER_SIZE = struct.calcsize("P")


class BtfError(ValueError):
    """The BTF is not readable, or lacks a type or member the sweep needs (the message names it)."""


class Member(NamedTuple):
    """A member found along a path: its byte offset from the start of the outer struct, its
    size in bytes, its kind (after typedefs and qualifiers) and, for a pointer, the name of the
    struct it points to."""

    offset: int
    size: int
    kind: int
    points_to: str | None


class Btf:
    """Types of one BTF blob, indexed once (about 0.2-0.5 s for a distribution kernel's vmlinux)."""

    def __init__(self, data: bytes) -> None:
        if len(data) < _HEADER.size:
            raise BtfError("BTF data is shorter than its header")
        magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise BtfError(f"not BTF (magic {magic:#x}, expected {MAGIC:#x}, little-endian)")
        if version != 1:
            raise BtfError(f"BTF version {version} is not the version 1 ka reads")
        self._data = data
        self._strings = hdr_len + str_off
        self._strings_end = self._strings + str_len
        self._starts = array.array("Q", [0])  # type id -> record offset (id 0 is void)
        self._by_name: dict[tuple[int, int], list[int]] = {}  # (kind, name_off) -> ids
        position, end = hdr_len + type_off, hdr_len + type_off + type_len
        if end > len(data) or self._strings_end > len(data):
            raise BtfError("BTF sections run past the end of the data")
        unpack = _RECORD.unpack_from
        while position < end:
            name_off, info, _size = unpack(data, position)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            self._starts.append(position)
            if kind in (STRUCT, UNION, FUNC) and name_off:
                self._by_name.setdefault((kind, name_off), []).append(len(self._starts) - 1)
            position += _RECORD.size + _FIXED_EXTRA.get(kind, 0) + _PER_MEMBER.get(kind, 0) * vlen

    @classmethod
    def load(cls, path: Path = VMLINUX) -> Btf:
        """The BTF at ``path`` (default: the running kernel's); ``BtfError`` if it cannot be read."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BtfError(f"cannot read the kernel's BTF at {path}: {exc.strerror}") from exc
        return cls(data)

    def __len__(self) -> int:
        """The number of types (void not counted)."""
        return len(self._starts) - 1

    def _name(self, name_off: int) -> str:
        start = self._strings + name_off
        return self._data[start : self._data.index(b"\0", start)].decode()

    def _record(self, type_id: int) -> tuple[int, int, int, int, int]:
        """(kind, name_off, vlen, size_or_type, kind_flag) of a type."""
        if not 0 < type_id < len(self._starts):
            raise BtfError(f"no BTF type {type_id}")
        name_off, info, size = _RECORD.unpack_from(self._data, self._starts[type_id])
        return (info >> 24) & 0x1F, name_off, info & 0xFFFF, size, info >> 31

    def _name_offsets(self, name: str) -> list[int]:
        """Where ``name`` starts as a whole string in the string section."""
        needle = b"\0" + name.encode() + b"\0"
        found: list[int] = []
        start = self._strings - 1
        while True:
            at = self._data.find(needle, start, self._strings_end)
            if at < 0:
                return found
            found.append(at + 1 - self._strings)
            start = at + 1

    def find(self, name: str, kind: int) -> int:
        """The id of the struct, union or function called ``name``; ``BtfError`` if there is none."""
        for name_off in self._name_offsets(name):
            ids = self._by_name.get((kind, name_off))
            if ids:
                return ids[0]
        what = {STRUCT: "struct", UNION: "union", FUNC: "function"}.get(kind, f"kind {kind}")
        raise BtfError(f"the kernel's BTF has no {what} {name!r}")

    def resolve(self, type_id: int) -> int:
        """The type behind typedefs and qualifiers (0, void, stays 0)."""
        for _ in range(64):
            if type_id == 0:
                return 0
            kind, _name, _vlen, size_or_type, _flag = self._record(type_id)
            if kind not in _QUALIFIERS:
                return type_id
            type_id = size_or_type
        raise BtfError(f"BTF type {type_id}: a chain of qualifiers too long to follow")

    def size_of(self, type_id: int) -> int:
        """Bytes of a type (after typedefs and qualifiers)."""
        type_id = self.resolve(type_id)
        kind, _name, _vlen, size, _flag = self._record(type_id)
        if kind == PTR:
            return POINTER_SIZE
        if kind == ARRAY:
            elem, _index, count = struct.unpack_from("<III", self._data, self._starts[type_id] + 12)
            return self.size_of(elem) * int(count)
        return size

    def _members(self, type_id: int) -> list[tuple[str, int, int, bool]]:
        """(name, type id, bit offset, is a bit field) of a struct's or union's members."""
        kind, _name, vlen, _size, kind_flag = self._record(type_id)
        if kind not in (STRUCT, UNION):
            raise BtfError(f"BTF type {type_id} is not a struct or union")
        start = self._starts[type_id] + _RECORD.size
        members = []
        for i in range(vlen):
            name_off, member_type, offset = _MEMBER.unpack_from(self._data, start + i * _MEMBER.size)
            # with kind_flag the top 8 bits are a bit field's size; without it an int's own
            # encoding says how many bits it takes
            bits = offset & 0xFFFFFF if kind_flag else offset
            bit_field = bool(offset >> 24) if kind_flag else self._int_bits(member_type) not in (None, 0)
            members.append((self._name(name_off) if name_off else "", member_type, bits, bit_field))
        return members

    def _int_bits(self, type_id: int) -> int | None:
        """For an int narrower than its size (a bit field without kind_flag): its bits; else None."""
        resolved = self.resolve(type_id)
        if not resolved or self._record(resolved)[0] != INT:
            return None
        encoding = struct.unpack_from("<I", self._data, self._starts[resolved] + _RECORD.size)[0]
        nr_bits, bit_offset = encoding & 0xFF, (encoding >> 16) & 0xFF
        return None if nr_bits == 8 * self.size_of(resolved) and not bit_offset else nr_bits

    def _lookup(self, type_id: int, name: str) -> tuple[int, int, bool] | None:
        """(type id, bit offset, is a bit field) of member ``name``, looking inside anonymous
        members too."""
        for member_name, member_type, bits, bit_field in self._members(type_id):
            if member_name == name:
                return member_type, bits, bit_field
            inner = self.resolve(member_type)
            if not member_name and self._record(inner)[0] in (STRUCT, UNION):
                found = self._lookup(inner, name)
                if found is not None:
                    return found[0], bits + found[1], found[2]
        return None

    def member(self, struct_name: str, path: str) -> Member:
        """The member at a dotted ``path`` inside ``struct struct_name`` (``sk.sk_cgrp_data.cgroup``),
        its offset counted from the start of the outer struct; ``BtfError`` naming the first
        part that is not there."""
        type_id = self.find(struct_name, STRUCT)
        bits = 0
        bit_field = False
        where = f"struct {struct_name}"
        member_type = type_id
        for part in path.split("."):
            current = self.resolve(member_type)
            if self._record(current)[0] not in (STRUCT, UNION):
                raise BtfError(f"{where} is not a struct, so it has no member {part!r}")
            found = self._lookup(current, part)
            if found is None:
                raise BtfError(f"{where} has no member {part!r} in this kernel")
            member_type, offset, bit_field = found
            bits += offset
            where = f"{where}.{part}"
        if bits % 8 or bit_field:
            raise BtfError(f"{where} is a bit field, not a member the program can load")
        resolved = self.resolve(member_type)
        kind, _name, _vlen, size_or_type, _flag = self._record(resolved)
        points_to = None
        if kind == PTR:
            target = self.resolve(size_or_type)
            if target:
                target_kind, target_name, *_ = self._record(target)
                if target_kind in (STRUCT, UNION) and target_name:
                    points_to = self._name(target_name)
        return Member(bits // 8, self.size_of(resolved), kind, points_to)
