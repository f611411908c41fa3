"""The two programs, assembled at run time, and the records they share with ka.

**sock_ops** (attached to a cgroup): on ``BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB`` (4, an outgoing
connection's handshake completed) and ``PASSIVE_ESTABLISHED_CB`` (5, an accepted one's) it sets
the policy with ``bpf_setsockopt``, 4-byte values, SO_KEEPALIVE first; every other callback
returns at once. **tcp iterator** (the sweep): for every TCP socket of a network namespace whose
cgroup is in a set, the same steps. Both count what they did.

The policy lives in a map (``POLICY``), not in the instructions: ``ka guard list`` reads the
policy in force back from the kernel, and attaching again changes it in place with one map
update, with no moment without a program. The cost is one array lookup per connection.

Why assembled at run time rather than shipped as bytecode: the iterator's offsets come from the
running kernel's BTF, so it must be assembled where it runs; the sock_ops program then takes the
same path, and its text stays readable next to its encoding (``Program.listing``). The tests
compare the listing with the kernel's own disassembly of what it loaded.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from .._options import LIMITS_BY_PLATFORM, OS_CALLS, Option
from ..policy import KeepAlive
from .asm import DW, FP, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, SUB, Assembler, B, Helper, Program, W
from .btf import FUNC, PTR, Btf, BtfError

ACTIVE_ESTABLISHED_CB = 4  # enum bpf_sock_ops_cb: an outgoing connection is established
PASSIVE_ESTABLISHED_CB = 5  # an accepted connection is established
TCP_LISTEN = 10
SOL_SOCKET = OS_CALLS["linux"].sol_socket
SO_KEEPALIVE = OS_CALLS["linux"].so_keepalive
SOL_TCP = 6
LINUX_LIMITS = LIMITS_BY_PLATFORM["linux"]

# -- the policy record (map POLICY, one element): eight u32 ------------------------------------
LAYOUT = 1  # the record's version: a pinned record of another version is not read
POLICY = struct.Struct("=8I")  # layout, options, flags, keepalive, idle, interval, count, user_timeout_ms
OPTIONS_OFF, FLAGS_OFF = 4, 8
KEEP_OWN = 1 << 0
# option -> (bit in OPTIONS, offset of its value, level, optname), in the order they are set
STEPS = {
    Option.KEEPALIVE: (1 << 0, 12, SOL_SOCKET, SO_KEEPALIVE),
    Option.IDLE: (1 << 1, 16, SOL_TCP, 4),  # TCP_KEEPIDLE
    Option.INTERVAL: (1 << 2, 20, SOL_TCP, 5),  # TCP_KEEPINTVL
    Option.COUNT: (1 << 3, 24, SOL_TCP, 6),  # TCP_KEEPCNT
    Option.USER_TIMEOUT: (1 << 4, 28, SOL_TCP, 18),  # TCP_USER_TIMEOUT
}
RANGES = {
    Option.KEEPALIVE: (0, 1),
    Option.IDLE: (1, LINUX_LIMITS.max_idle),
    Option.INTERVAL: (1, LINUX_LIMITS.max_interval),
    Option.COUNT: (1, LINUX_LIMITS.max_count),
    Option.USER_TIMEOUT: (0, LINUX_LIMITS.max_user_timeout_ms),
}

# -- the counters (map COUNTERS, one element of six u64; per CPU for the sock_ops program) ----
COUNTERS = struct.Struct("=6Q")
HANDLED, APPLIED, KEPT_OWN, OPTIONS_FAILED, LAST_ERROR, SEEN = (8 * i for i in range(6))


@dataclass(frozen=True)
class Counters:
    """What a program did: ``handled`` connections it acted on (established in the cgroup, or
    matched by the sweep), ``applied`` those that got every option, ``kept_own`` those left alone
    because keepalive was already on (``--keep-own``), ``options_failed`` bpf_setsockopt (or
    getsockopt) calls that failed, ``last_error`` the errno of the latest failure (0: none),
    ``seen`` TCP sockets the sweep's iterator visited (0 for the sock_ops program)."""

    handled: int = 0
    applied: int = 0
    kept_own: int = 0
    options_failed: int = 0
    last_error: int = 0
    seen: int = 0

    @classmethod
    def from_values(cls, values: bytes) -> Counters:
        """The counters from one map value, or from a per-CPU value (one record per CPU, summed;
        ``last_error`` is any CPU's latest)."""
        records = [COUNTERS.unpack_from(values, at) for at in range(0, len(values), COUNTERS.size)]
        sums = [sum(column) for column in zip(*records)]
        sums[4] = next((r[4] for r in records if r[4]), 0)
        return cls(*sums)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class PolicyRecord(NamedTuple):
    """A policy as the programs read it: which options to set, their values, the flags."""

    options: int
    flags: int
    values: Mapping[Option, int]

    def pack(self) -> bytes:
        fields = [self.values.get(option, 0) for option in STEPS]
        return POLICY.pack(LAYOUT, self.options, self.flags, *fields)

    @property
    def keep_own(self) -> bool:
        return bool(self.flags & KEEP_OWN)

    @classmethod
    def unpack(cls, data: bytes) -> PolicyRecord:
        layout, options, flags, *fields = POLICY.unpack_from(data)
        if layout != LAYOUT:
            raise ValueError(
                f"a policy record of layout {layout}, not {LAYOUT} (attached by another ka version)"
            )
        values = {option: value for (option, (bit, *_)), value in zip(STEPS.items(), fields) if options & bit}
        return cls(options, flags, values)

    def policy(self) -> KeepAlive:
        """The record as a ``KeepAlive``."""
        ut = self.values.get(Option.USER_TIMEOUT)
        user_timeout = None if ut is None else ut / 1000
        if self.values.get(Option.KEEPALIVE) == 0:
            return KeepAlive(enabled=False, user_timeout=user_timeout)
        return KeepAlive(
            self.values.get(Option.IDLE),
            self.values.get(Option.INTERVAL),
            self.values.get(Option.COUNT),
            user_timeout=user_timeout,
        )


def policy_record(policy: KeepAlive, *, keep_own: bool = False) -> PolicyRecord:
    """The record for ``policy``; ``ValueError`` naming a value Linux's setsockopt refuses
    (idle and interval 1-32767 s, count 1-127, user timeout 0-2147483647 ms), before anything
    is loaded."""
    options, values = 0, {}
    for option, value in policy.spec.steps():
        low, high = RANGES[option]
        if not low <= value <= high:
            raise ValueError(
                f"{option.system_name} {value} is outside what Linux takes ({low} to {high}): "
                f"policy {policy} cannot be guarded"
            )
        options |= STEPS[option][0]
        values[option] = value
    return PolicyRecord(options, KEEP_OWN if keep_own else 0, values)


def _count(asm: Assembler, counter: int, amount: Any = 1) -> None:
    """counters[counter] += amount (a register or 1), atomically."""
    if amount == 1:
        asm.mov(R1, 1)
        amount = R1
    asm.atomic_add(R8, counter, amount)


def _apply_policy(asm: Assembler, done: str) -> None:
    """The shared body: the socket in r6, the policy record in r7, the counters in r8.

    Counts the socket handled; with KEEP_OWN, leaves it alone when SO_KEEPALIVE is already on;
    else sets each option the record holds, SO_KEEPALIVE first, counting failures (r9) and the
    latest errno. Jumps to ``done``."""
    _count(asm, HANDLED)
    asm.load(R1, R7, FLAGS_OFF, W)
    asm.and_(R1, KEEP_OWN)
    asm.jump_if(R1, "==", 0, "set_options")
    asm.store(FP, -8, 0, W)
    _socket_call(asm, Helper.getsockopt, SOL_SOCKET, SO_KEEPALIVE)
    asm.jump_if(R0, "==", 0, "read_own")
    _count_failure(asm)
    _count(asm, OPTIONS_FAILED)
    asm.jump("set_options")
    asm.label("read_own")
    asm.load(R1, FP, -8, W)
    asm.jump_if(R1, "==", 0, "set_options")
    _count(asm, KEPT_OWN)
    asm.jump(done)

    asm.label("set_options")
    asm.mov(R9, 0)  # options that failed on this socket
    for option, (bit, value_off, level, optname) in STEPS.items():
        skip = f"after_{option.name.lower()}"
        asm.load(R1, R7, OPTIONS_OFF, W)
        asm.and_(R1, bit)
        asm.jump_if(R1, "==", 0, skip)
        asm.load(R1, R7, value_off, W)
        asm.store(FP, -8, R1, W)
        _socket_call(asm, Helper.setsockopt, level, optname)
        asm.jump_if(R0, "==", 0, skip)
        asm.add(R9, 1)
        _count_failure(asm)
        asm.label(skip)
    asm.jump_if(R9, "!=", 0, "some_failed")
    _count(asm, APPLIED)
    asm.jump(done)
    asm.label("some_failed")
    _count(asm, OPTIONS_FAILED, R9)
    asm.jump(done)


def _socket_call(asm: Assembler, helper: Helper, level: int, optname: int) -> None:
    """r0 = helper(r6, level, optname, fp - 8, 4): bpf_setsockopt / bpf_getsockopt on a 4-byte value."""
    asm.mov(R1, R6)
    asm.mov(R2, level)
    asm.mov(R3, optname)
    asm.mov(R4, FP)
    asm.add(R4, -8)
    asm.mov(R5, 4)
    asm.call(helper)


def _count_failure(asm: Assembler) -> None:
    """counters[LAST_ERROR] = -r0 (the helper's negative errno, kept positive)."""
    asm.mov(R1, 0)
    asm.alu(SUB, R1, R0)
    asm.store(R8, LAST_ERROR, R1, DW)


def _lookup(asm: Assembler, map_name: str, key_off: int, into: Any, missing: str) -> None:
    """into = map_lookup_elem(map, fp + key_off), to ``missing`` when there is no element."""
    asm.load_map(R1, map_name)
    asm.mov(R2, FP)
    asm.add(R2, key_off)
    asm.call(Helper.map_lookup_elem)
    asm.jump_if(R0, "==", 0, missing)
    asm.mov(into, R0)


def sock_ops_program() -> Program:
    """The sock_ops program: the policy on every connection established in the cgroup.

    Maps: ``policy`` (array, one ``PolicyRecord``), ``counters`` (per-CPU array, one ``Counters``).
    Returns 1 (the kernel ignores the value for these callbacks).
    """
    asm = Assembler()
    asm.mov(R6, R1)  # the bpf_sock_ops context
    asm.load(R2, R6, 0, W)  # ctx->op
    asm.jump_if(R2, "==", ACTIVE_ESTABLISHED_CB, "established")
    asm.jump_if(R2, "!=", PASSIVE_ESTABLISHED_CB, "done")
    asm.label("established")
    asm.store(FP, -4, 0, W)  # key 0 of both arrays
    _lookup(asm, "policy", -4, R7, "done")
    _lookup(asm, "counters", -4, R8, "done")
    _apply_policy(asm, "done")
    asm.label("done")
    asm.mov(R0, 1)
    asm.exit()
    return asm.assemble()


class IteratorLayout(NamedTuple):
    """Where the iterator program finds a socket's state and cgroup id, from the kernel's BTF."""

    iter_func_id: int  # BTF id of bpf_iter_tcp, the iterator's attach point
    state: int  # tcp_sock -> sk.__sk_common.skc_state (u8)
    cgroup: int  # tcp_sock -> sk.sk_cgrp_data.cgroup (struct cgroup *)
    kn: int  # cgroup -> kn (struct kernfs_node *)
    kn_id: int  # kernfs_node -> id (u64: the cgroup id, the inode of its directory)


def iterator_layout(btf: Btf) -> IteratorLayout:
    """The offsets the iterator needs; ``BtfError`` naming what this kernel lacks."""
    state = btf.member("tcp_sock", "inet_conn.icsk_inet.sk.__sk_common.skc_state")
    cgroup = btf.member("tcp_sock", "inet_conn.icsk_inet.sk.sk_cgrp_data.cgroup")
    kn = btf.member("cgroup", "kn")
    kn_id = btf.member("kernfs_node", "id")
    if state.size != 1:
        raise BtfError(f"sock_common.skc_state is {state.size} bytes here, not 1")
    if cgroup.kind != PTR or cgroup.points_to != "cgroup":
        raise BtfError("sock_cgroup_data.cgroup is not a struct cgroup pointer here (before Linux 5.15)")
    if kn.points_to != "kernfs_node" or kn_id.size != 8:
        raise BtfError("cgroup.kn.id is not a 64-bit kernfs node id here")
    return IteratorLayout(
        btf.find("bpf_iter_tcp", FUNC), state.offset, cgroup.offset, kn.offset, kn_id.offset
    )


def iterator_program(layout: IteratorLayout) -> Program:
    """The sweep's tcp iterator program: the policy on every TCP socket, but listeners, whose
    cgroup id is in the ``cgroups`` map.

    Maps: ``policy`` (array, one ``PolicyRecord``), ``counters`` (array, one ``Counters``),
    ``cgroups`` (hash, u64 cgroup id -> u8). Returns 0 (go on with the next socket).
    """
    asm = Assembler()
    asm.load(R6, R1, 8, DW)  # ctx->sk_common (NULL on the last call)
    asm.jump_if(R6, "==", 0, "done")
    asm.store(FP, -4, 0, W)  # key 0 of both arrays
    _lookup(asm, "policy", -4, R7, "done")
    _lookup(asm, "counters", -4, R8, "done")
    _count(asm, SEEN)
    asm.mov(R1, R6)
    asm.call(Helper.skc_to_tcp_sock)  # NULL for time-wait and request sockets
    asm.jump_if(R0, "==", 0, "done")
    asm.mov(R6, R0)
    asm.load(R1, R6, layout.state, B)
    asm.jump_if(R1, "==", TCP_LISTEN, "done")
    asm.load(R1, R6, layout.cgroup, DW)
    asm.jump_if(R1, "==", 0, "done")
    asm.load(R1, R1, layout.kn, DW)
    asm.jump_if(R1, "==", 0, "done")
    asm.load(R1, R1, layout.kn_id, DW)
    asm.store(FP, -16, R1, DW)
    asm.load_map(R1, "cgroups")
    asm.mov(R2, FP)
    asm.add(R2, -16)
    asm.call(Helper.map_lookup_elem)
    asm.jump_if(R0, "==", 0, "done")
    _apply_policy(asm, "done")
    asm.label("done")
    asm.mov(R0, 0)
    asm.exit()
    return asm.assemble()
