"""The bpf(2) system call through ctypes, and the commands ka uses.

Each command's attributes are packed the way ``union bpf_attr`` lays them out
(include/uapi/linux/bpf.h): only the leading fields a command needs are passed, and the kernel
reads the rest as zero. Pointers in the attributes are the addresses of ctypes buffers kept alive
for the call. A failed call raises ``BpfError``, an ``OSError`` whose message names the command.

Nothing here decides anything: ``ka.guard.loader`` owns the descriptors these calls return.
"""

from __future__ import annotations

import ctypes
import enum
import os
import platform
import struct
from typing import Any, NamedTuple

# The bpf(2) system call's number per machine (arch/*/entry/syscalls, include/uapi/asm-generic/unistd.h).
SYSCALL_NUMBERS = {
    "x86_64": 321,
    "aarch64": 280,
    "arm64": 280,
    "riscv64": 280,
    "loongarch64": 280,
    "ppc64le": 361,
    "ppc64": 361,
    "s390x": 351,
    "armv7l": 386,
    "armv6l": 386,
    "i686": 357,
    "i386": 357,
}


class Cmd(enum.IntEnum):
    """``enum bpf_cmd``: the commands used here."""

    MAP_CREATE = 0
    MAP_LOOKUP_ELEM = 1
    MAP_UPDATE_ELEM = 2
    PROG_LOAD = 5
    OBJ_PIN = 6
    OBJ_GET = 7
    PROG_ATTACH = 8
    PROG_DETACH = 9
    PROG_GET_FD_BY_ID = 13
    OBJ_GET_INFO_BY_FD = 15
    PROG_QUERY = 16
    LINK_CREATE = 28
    LINK_UPDATE = 29
    ITER_CREATE = 33
    LINK_DETACH = 34
    ENABLE_STATS = 32


class MapType(enum.IntEnum):
    HASH = 1
    ARRAY = 2
    PERCPU_ARRAY = 6


class ProgType(enum.IntEnum):
    SOCK_OPS = 13
    TRACING = 26


class AttachType(enum.IntEnum):
    CGROUP_SOCK_OPS = 3
    TRACE_ITER = 28


BPF_F_ALLOW_OVERRIDE = 1 << 0
BPF_F_ALLOW_MULTI = 1 << 1
BPF_F_QUERY_EFFECTIVE = 1 << 0
LINK_TYPE_CGROUP = 3
OBJ_NAME_LEN = 16


class BpfError(OSError):
    """A failed bpf(2) command: ``errno`` is the kernel's, ``command`` the ``Cmd``."""

    errno: int  # always given, unlike OSError's

    def __init__(self, err: int, command: Cmd, detail: str = "") -> None:
        text = f"bpf({command.name}){' ' + detail if detail else ''}: {os.strerror(err)}"
        super().__init__(err, text)
        self.command = command


class LinkInfo(NamedTuple):
    """``struct bpf_link_info`` for a cgroup link: ``cgroup_id`` is 0 once the cgroup is gone."""

    type: int
    id: int
    prog_id: int
    cgroup_id: int
    attach_type: int


class MapInfo(NamedTuple):
    """The leading fields of ``struct bpf_map_info``."""

    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str


class ProgInfo(NamedTuple):
    """The fields of ``struct bpf_prog_info`` ka reads: type, id, name, and the time the program
    ran and how often (counted only while statistics are on: ``enable_stats``)."""

    type: int
    id: int
    name: str
    run_time_ns: int
    run_cnt: int


_libc: ctypes.CDLL | None = None


def _syscall() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc.syscall


def syscall_number() -> int | None:
    """bpf(2)'s number on this machine, or None where ka does not know it."""
    return SYSCALL_NUMBERS.get(platform.machine())


def bpf(command: Cmd, attr: ctypes.Array[ctypes.c_char], detail: str = "") -> int:
    """One bpf(2) call with ``attr`` (read back by the caller for outputs); its result, or
    ``BpfError``. EINTR is retried."""
    number = syscall_number()
    if number is None:
        raise BpfError(38, command, f"(ka does not know bpf(2)'s number on {platform.machine()})")
    call = _syscall()
    while True:
        result = int(call(ctypes.c_long(number), ctypes.c_int(command), attr, ctypes.c_uint(len(attr))))
        if result >= 0:
            return result
        err = ctypes.get_errno()
        if err != 4:  # EINTR
            raise BpfError(err, command, detail)


def _attr(fmt: str, *values: object) -> ctypes.Array[ctypes.c_char]:
    """The attributes packed little- or big-endian as the host lays out the union, padded to 8."""
    packed = struct.pack("=" + fmt, *values)
    packed += b"\0" * (-len(packed) % 8)
    return ctypes.create_string_buffer(packed, len(packed))


def _address(buffer: ctypes.Array[ctypes.c_char] | None) -> int:
    return 0 if buffer is None else ctypes.addressof(buffer)


def _name(text: str) -> bytes:
    raw = text.encode()
    if len(raw) >= OBJ_NAME_LEN:
        raise ValueError(f"BPF object name {text!r} is longer than {OBJ_NAME_LEN - 1} bytes")
    return raw


def map_create(map_type: MapType, key_size: int, value_size: int, max_entries: int, name: str) -> int:
    """A new map's descriptor (BPF_MAP_CREATE)."""
    # map_type, key_size, value_size, max_entries, map_flags, inner_map_fd, numa_node, map_name
    attr = _attr("7I16s", map_type, key_size, value_size, max_entries, 0, 0, 0, _name(name))
    return bpf(Cmd.MAP_CREATE, attr, name)


def map_update(map_fd: int, key: bytes, value: bytes) -> None:
    """Set one element (BPF_MAP_UPDATE_ELEM, flags BPF_ANY)."""
    k, v = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value, len(value))
    bpf(Cmd.MAP_UPDATE_ELEM, _attr("I4xQQQ", map_fd, _address(k), _address(v), 0))


def map_lookup(map_fd: int, key: bytes, value_size: int) -> bytes:
    """One element's value (BPF_MAP_LOOKUP_ELEM); for a per-CPU map ``value_size`` covers every
    possible CPU, each value rounded up to 8 bytes."""
    k, v = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value_size)
    bpf(Cmd.MAP_LOOKUP_ELEM, _attr("I4xQQQ", map_fd, _address(k), _address(v), 0))
    return v.raw


def prog_load(
    prog_type: ProgType,
    insns: bytes,
    name: str,
    *,
    license: str = "GPL",
    expected_attach_type: int = 0,
    attach_btf_id: int = 0,
    log: ctypes.Array[ctypes.c_char] | None = None,
    log_level: int = 1,
) -> int:
    """A loaded program's descriptor (BPF_PROG_LOAD). With ``log``, the verifier writes its log
    there: level 1 says why it refused, level 2 prints every instruction it checked."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    log_size = 0 if log is None else len(log)
    attr = _attr(
        # prog_type, insn_cnt, insns, license, log_level, log_size, log_buf, kern_version,
        # prog_flags, prog_name, prog_ifindex, expected_attach_type, prog_btf_fd,
        # func_info_rec_size, func_info, func_info_cnt, line_info_rec_size, line_info,
        # line_info_cnt, attach_btf_id
        "IIQQIIQII16sIIIIQIIQII",
        prog_type,
        len(insns) // 8,
        _address(code),
        _address(lic),
        0 if log is None else log_level,
        log_size,
        _address(log),
        0,
        0,
        _name(name),
        0,
        expected_attach_type,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        attach_btf_id,
    )
    return bpf(Cmd.PROG_LOAD, attr, name)


def obj_pin(fd: int, path: str) -> None:
    """Pin a map, program or link at ``path`` in a bpffs (BPF_OBJ_PIN)."""
    where = ctypes.create_string_buffer(os.fsencode(path))
    bpf(Cmd.OBJ_PIN, _attr("QI", _address(where), fd), path)


def obj_get(path: str) -> int:
    """A new descriptor for the object pinned at ``path`` (BPF_OBJ_GET)."""
    where = ctypes.create_string_buffer(os.fsencode(path))
    return bpf(Cmd.OBJ_GET, _attr("QII", _address(where), 0, 0), path)


def link_create(prog_fd: int, target_fd: int, attach_type: AttachType, flags: int = 0) -> int:
    """A link attaching the program to the target (BPF_LINK_CREATE; a cgroup's descriptor for
    cgroup programs, 0 for an iterator)."""
    return bpf(Cmd.LINK_CREATE, _attr("IIII", prog_fd, target_fd, attach_type, flags))


def link_update(link_fd: int, new_prog_fd: int) -> None:
    """Swap the link's program for another in one step (BPF_LINK_UPDATE)."""
    bpf(Cmd.LINK_UPDATE, _attr("IIII", link_fd, new_prog_fd, 0, 0))


def link_detach(link_fd: int) -> None:
    """Detach the link's program now, whoever else holds the link (BPF_LINK_DETACH, 5.9+)."""
    bpf(Cmd.LINK_DETACH, _attr("I", link_fd))


def iter_create(link_fd: int) -> int:
    """A readable descriptor that runs the iterator link's program as it is read (BPF_ITER_CREATE)."""
    return bpf(Cmd.ITER_CREATE, _attr("II", link_fd, 0))


def prog_attach(target_fd: int, prog_fd: int, attach_type: AttachType, flags: int) -> None:
    """Attach without a link (BPF_PROG_ATTACH): what other tools do; flags 0 is exclusive."""
    bpf(Cmd.PROG_ATTACH, _attr("IIIII", target_fd, prog_fd, attach_type, flags, 0))


def prog_detach(target_fd: int, prog_fd: int, attach_type: AttachType) -> None:
    """Undo ``prog_attach`` (BPF_PROG_DETACH)."""
    bpf(Cmd.PROG_DETACH, _attr("IIIII", target_fd, prog_fd, attach_type, 0, 0))


class Query(NamedTuple):
    """BPF_PROG_QUERY's answer: the attach flags (of a single, non-multi attachment) and the
    programs' ids."""

    attach_flags: int
    prog_ids: list[int]


def prog_query(target_fd: int, attach_type: AttachType, effective: bool = False, room: int = 64) -> Query:
    """The programs attached to a cgroup for ``attach_type`` (``effective``: those that run
    there, inherited ones included)."""
    ids = (ctypes.c_uint32 * room)()
    attr = _attr(
        "IIIIQI",
        target_fd,
        attach_type,
        BPF_F_QUERY_EFFECTIVE if effective else 0,
        0,
        ctypes.addressof(ids),
        room,
    )
    bpf(Cmd.PROG_QUERY, attr)
    _fd, _type, _query_flags, attach_flags, _ids, count = struct.unpack_from("=IIIIQI", attr.raw)
    return Query(attach_flags, list(ids[: min(count, room)]))


def _info(fd: int, size: int) -> bytes:
    info = ctypes.create_string_buffer(size)
    bpf(Cmd.OBJ_GET_INFO_BY_FD, _attr("IIQ", fd, size, ctypes.addressof(info)))
    return info.raw


def link_info(fd: int) -> LinkInfo:
    """What a link is (BPF_OBJ_GET_INFO_BY_FD): its type, id, program, and cgroup."""
    type_, id_, prog_id, cgroup_id, attach_type = struct.unpack_from("=III4xQI", _info(fd, 64))
    return LinkInfo(type_, id_, prog_id, cgroup_id, attach_type)


def map_info(fd: int) -> MapInfo:
    """What a map is (BPF_OBJ_GET_INFO_BY_FD)."""
    type_, id_, key, value, entries, flags, name = struct.unpack_from("=6I16s", _info(fd, 80))
    return MapInfo(type_, id_, key, value, entries, flags, name.rstrip(b"\0").decode(errors="replace"))


def prog_info(fd: int) -> ProgInfo:
    """What a program is (BPF_OBJ_GET_INFO_BY_FD)."""
    raw = _info(fd, 232)
    type_, id_ = struct.unpack_from("=II", raw)
    name = raw[64:80].rstrip(b"\0").decode(errors="replace")
    run_time_ns, run_cnt = struct.unpack_from("=QQ", raw, 192)
    return ProgInfo(type_, id_, name, run_time_ns, run_cnt)


def prog_get_fd_by_id(prog_id: int) -> int:
    """A descriptor of the loaded program with this id (BPF_PROG_GET_FD_BY_ID)."""
    return bpf(Cmd.PROG_GET_FD_BY_ID, _attr("III", prog_id, 0, 0))


def enable_stats() -> int:
    """Count every program's run time while the returned descriptor is open (BPF_ENABLE_STATS,
    BPF_STATS_RUN_TIME; Linux 5.8+, CAP_SYS_ADMIN); the sysctl is left alone."""
    return bpf(Cmd.ENABLE_STATS, _attr("I", 0))
