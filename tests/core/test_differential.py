"""Issue 10: the compiled core and the twin on the same generated inputs give identical results,
or raise the same exception with the same message: mixed descriptor kinds, every container the
core takes (lists, tuples, iterators, int arrays, strided and structured numpy views), lists a
target's fileno() mutates during the call, entries whose fileno() raises, and a signal whose
handler raises inside the call. After every call, no descriptor is closed or changed."""

from __future__ import annotations

import array
import functools
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import ka
from ka import _ka_py
from ka._impl import env_flag
from reliability_helpers import fd_state

np = pytest.importorskip("numpy")

if not sys.platform.startswith("linux"):
    pytest.skip("resets and reads Linux option numbers; uses /proc/self/fdinfo", allow_module_level=True)

if env_flag("KA_NO_EXTENSIONS"):
    pytest.skip("KA_NO_EXTENSIONS is set: the compiled core is not under test", allow_module_level=True)
from ka import _ka_c  # noqa: E402

TCP_OPTIONS = [
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", 4), 7200),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", 5), 75),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", 6), 9),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", 18), 0),
]


class Interrupted(BaseException):
    """Raised by the SIGALRM handler an entry's fileno() triggers."""


class Pool:
    """Descriptors of every kind, the same for both implementations, reset between runs."""

    def __init__(self) -> None:
        self.tcp = [socket.socket() for _ in range(4)]
        self.tcp[1].setblocking(False)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.unix, self.unix_peer = socket.socketpair(socket.AF_UNIX)
        self.pipe_r, self.pipe_w = os.pipe()
        self.devnull = os.open(os.devnull, os.O_RDONLY)
        closed = socket.socket()
        closed.close()
        self.closed_sock = closed  # fileno() == -1
        self.fds = [s.fileno() for s in self.tcp] + [
            self.udp.fileno(),
            self.unix.fileno(),
            self.pipe_r,
            self.devnull,
        ]
        self.state = {fd: fd_state(fd) for fd in self.fds}

    def reset(self) -> None:
        for sock in self.tcp:
            for level, name, value in TCP_OPTIONS:
                sock.setsockopt(level, name, value)

    def kernel(self) -> list[tuple[int, ...]]:
        return [tuple(s.getsockopt(level, name) for level, name, _ in TCP_OPTIONS) for s in self.tcp]

    def unchanged(self) -> None:
        assert {fd: fd_state(fd) for fd in self.fds} == self.state

    def close(self) -> None:
        for s in [*self.tcp, self.udp, self.unix, self.unix_peer]:
            s.close()
        for fd in (self.pipe_r, self.pipe_w, self.devnull):
            os.close(fd)


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    made = Pool()
    yield made
    made.close()


class Fileno:
    """An object with a Python-level fileno() that may act on the list it is in."""

    def __init__(self, value: Any, action: str, home: list[Any]) -> None:
        self.value, self.action, self.home = value, action, home

    def fileno(self) -> Any:
        if self.action == "clear":
            self.home.clear()
        elif self.action == "grow":
            self.home.extend([3.5, "x"] * 4)  # bad entries: only a call that re-reads the list sees them
        elif self.action == "replace":
            self.home[:] = [None] * len(self.home)
        elif self.action == "raise":
            raise OSError(9, "Bad file descriptor")
        elif self.action == "interrupt":
            os.kill(os.getpid(), signal.SIGALRM)
        return self.value


# An entry: (kind, pick) where pick chooses among the pool's descriptors of that kind.


def _above_the_limit() -> int:
    import resource  # POSIX only

    return min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 2**31 - 8)


CLOSED_BASE = _above_the_limit()
ENTRY_KINDS = ["sock", "int", "closed_sock", "udp", "unix", "pipe", "file", "closed_int", "negative", "bad"]
FILENO_ACTIONS = ["none", "clear", "grow", "replace", "raise", "interrupt"]
BAD_VALUES: list[Any] = [True, "3", 2**40, -(2**70), 3.0, None, b"4"]

entries = st.one_of(
    st.tuples(st.sampled_from(ENTRY_KINDS), st.integers(0, 3), st.just("none")),
    st.tuples(
        st.sampled_from(["sock", "int", "udp", "pipe"]), st.integers(0, 3), st.sampled_from(FILENO_ACTIONS)
    ),
)
CONTAINERS = [
    "list",
    "tuple",
    "iterator",
    "array_i",
    "array_q",
    "numpy_i8",
    "numpy_u4",
    "numpy_strided",
    "numpy_field",
]
ARRAY_CONTAINERS = CONTAINERS[3:]


def _value(pool: Pool, kind: str, pick: int) -> Any:
    makers: dict[str, Callable[[], Any]] = {
        "sock": lambda: pool.tcp[pick],
        "int": lambda: pool.tcp[pick].fileno(),
        "closed_sock": lambda: pool.closed_sock,
        "udp": lambda: pool.udp,
        "unix": lambda: pool.unix.fileno(),
        "pipe": lambda: pool.pipe_r,
        "file": lambda: pool.devnull,
        "closed_int": lambda: CLOSED_BASE + pick,  # above the descriptor limit: never open
        "negative": lambda: -1 - pick,
        "bad": lambda: BAD_VALUES[pick % len(BAD_VALUES)],
    }
    return makers[kind]()


def _as_int(pool: Pool, kind: str, pick: int) -> int:
    value = _value(pool, kind, pick)
    return value if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**31 else -7


def build(pool: Pool, spec: list[tuple[str, int, str]], container: str) -> Any:
    """Fresh targets for one run (a mutating fileno() acts on this run's own list)."""
    if container in ARRAY_CONTAINERS:
        ints = [_as_int(pool, kind, pick) for kind, pick, _ in spec]
        if container == "array_i":
            return array.array("i", ints)
        if container == "array_q":
            return array.array("q", ints)
        if container == "numpy_i8":
            return np.array(ints, dtype=np.int64)
        if container == "numpy_u4":
            return np.array(ints, dtype=np.int64).astype(np.uint32)  # -1 becomes 4294967295
        if container == "numpy_strided":
            return np.repeat(np.array(ints, dtype=np.int32), 2)[::2]
        records = np.zeros(len(ints), dtype=[("a", "i1"), ("fd", "=i4")])
        records["fd"] = ints
        return records["fd"]
    home: list[Any] = []
    for kind, pick, action in spec:
        value = _value(pool, kind, pick)
        home.append(
            value if action == "none" else Fileno(value if kind != "sock" else value.fileno(), action, home)
        )
    if container == "tuple":
        return tuple(home)
    if container == "iterator":
        return iter(home)
    return home


def outcome(pool: Pool, core: ModuleType, run: Callable[[ModuleType], Any]) -> tuple[Any, ...]:
    """What ``run(core)`` did: its returned columns and the kernel's values after, or the
    exception's type and message."""
    pool.reset()
    previous = signal.signal(signal.SIGALRM, _raise_interrupted)
    try:
        result = run(core)
        got: tuple[Any, ...] = ("ok", [list(c) if isinstance(c, array.array) else c for c in result])
    except (TypeError, ValueError, Interrupted) as exc:
        got = ("raised", type(exc).__name__, str(exc))
    finally:
        signal.signal(signal.SIGALRM, previous)
    pool.unchanged()
    return (*got, pool.kernel())


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted("SIGALRM")


@st.composite
def _policy(draw: st.DrawFn) -> ka.KeepAlive:
    if draw(st.integers(0, 9)) == 0:
        return ka.KeepAlive.disabled()
    idle = draw(st.one_of(st.none(), st.integers(1, 10_000)))
    interval = draw(st.one_of(st.none(), st.integers(1, 1000)))
    count = draw(st.one_of(st.none(), st.integers(1, 127)))
    timeouts = st.one_of(st.none(), st.integers(0, 100))
    if None not in (idle, interval, count):
        timeouts = st.one_of(timeouts, st.just("auto"))
    user_timeout = draw(timeouts)
    if (idle, interval, count, user_timeout) == (None, None, None, None):
        idle = 60
    return ka.KeepAlive(idle, interval, count, user_timeout=user_timeout)


policies = _policy()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    spec=st.lists(entries, max_size=10),
    container=st.sampled_from(CONTAINERS),
    policy=policies,
    threads=st.sampled_from([1, 3]),
)
def test_apply_many_core_and_twin_agree(
    pool: Pool, spec: list[tuple[str, int, str]], container: str, policy: ka.KeepAlive, threads: int
) -> None:
    def run(core: ModuleType) -> Any:
        return core.apply_many(build(pool, spec, container), policy, threads, "auto")

    results = [outcome(pool, core, run) for core in (_ka_c, _ka_py)]
    event(f"{container}: {results[0][0]} {results[0][1] if results[0][0] == 'raised' else ''}")
    assert results[0] == results[1]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    spec=st.lists(entries, max_size=10),
    container=st.sampled_from(CONTAINERS),
    threads=st.sampled_from([1, 3]),
)
def test_read_many_core_and_twin_agree(
    pool: Pool, spec: list[tuple[str, int, str]], container: str, threads: int
) -> None:
    def run(core: ModuleType) -> Any:
        return core.read_many(build(pool, spec, container), threads)

    results = [outcome(pool, core, run) for core in (_ka_c, _ka_py)]
    assert results[0] == results[1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entry=entries, policy=policies)
def test_single_apply_and_read_agree(pool: Pool, entry: tuple[str, int, str], policy: ka.KeepAlive) -> None:
    def single(core: ModuleType, op: str) -> Any:
        target = build(pool, [entry], "list")
        target = target[0] if target else None
        try:
            return ["ok", core.apply(target, policy) if op == "apply" else core.read(target)]
        except OSError as exc:
            return ["oserror", exc.errno, str(exc), getattr(exc, "option", None)]

    for op in ("apply", "read"):
        results = [outcome(pool, core, functools.partial(single, op=op)) for core in (_ka_c, _ka_py)]
        assert results[0] == results[1]


class _ShownOddly(int):
    """An int subclass whose str() is not its number."""

    def __str__(self) -> str:
        return "odd"


class _FilenoOddly:
    def fileno(self) -> int:
        return _ShownOddly(2**40)


@pytest.mark.parametrize("target", [_ShownOddly(2**40), _FilenoOddly()], ids=["int subclass", "fileno()"])
def test_beyond_a_c_int_is_named_by_its_number_in_both(target: object) -> None:
    """The twin used to format an int subclass with its own str() ("target is odd")."""
    policy = ka.KeepAlive(idle=60)
    messages = []
    for core in (_ka_c, _ka_py):
        with pytest.raises(ValueError, match="expected a C int") as info:
            core.apply(target, policy)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert "1099511627776" in messages[0] and "odd" not in messages[0]
