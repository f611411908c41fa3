"""apply_many / read_many: every input applied or reported, threads and both implementations alike."""

from __future__ import annotations

import array
import errno
import importlib
import resource
import socket
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType

import pytest

import ka
from helpers import core_apply_many, core_read_many, kernel_values, ss_timers
from ka._impl import env_flag
from ka.bench.pool import LoopbackPool

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux option numbers")

POLICY = ka.KeepAlive(idle=41, interval=9, count=6, user_timeout="auto")
EXPECTED = (1, 41, 9, 6, 95000)


@pytest.fixture
def mixed() -> Iterator[tuple[list[object], dict[int, tuple[int, ka.Option]], list[socket.socket]]]:
    """Live sockets with closed fds, a regular file, a UDP and a Unix socket among them.

    Yields (targets, {index: (errno, option)} for the bad ones, the live sockets).
    """
    with LoopbackPool(40) as pool, tempfile.TemporaryFile() as f:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ua, ub = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        closed = socket.socket()
        closed.close()
        # A descriptor number above the limit is never open: a closed socket's own number could be
        # taken again by any descriptor opened later (an io_uring ring the core creates, say).
        closed_fd = resource.getrlimit(resource.RLIMIT_NOFILE)[0] + 7
        live = pool.sockets
        targets: list[object] = list(live[:10])
        bad: dict[int, tuple[int, ka.Option]] = {}
        for obj, err in (
            (closed_fd, errno.EBADF),
            (f, errno.ENOTSOCK),
            (udp, errno.ENOPROTOOPT),
            (ua, errno.EOPNOTSUPP),
            (closed, errno.EBADF),
            (-7, errno.EBADF),
        ):
            # SO_KEEPALIVE comes first: a non-socket fails there, a non-TCP socket on the idle
            first = ka.Option.IDLE if err in (errno.ENOPROTOOPT, errno.EOPNOTSUPP) else ka.Option.KEEPALIVE
            bad[len(targets)] = (err, first)
            targets.append(obj)
            targets.extend(live[len(targets) - len(bad) : len(targets) - len(bad) + 5])
        targets.extend(live[len(targets) - len(bad) :])
        try:
            yield targets, bad, live
        finally:
            for s in (udp, ua, ub):
                s.close()


def _unix_errno(err: int) -> set[int]:
    return {errno.EOPNOTSUPP, errno.ENOPROTOOPT} if err == errno.EOPNOTSUPP else {err}


def test_mixed_pool_every_input_accounted_for(core: ModuleType, mixed: tuple) -> None:  # type: ignore[type-arg]
    targets, bad, live = mixed
    assert len(live) == 40 and len(targets) == 46
    result = core_apply_many(core, targets, POLICY)
    assert len(result) == len(targets)
    assert result.applied == 40
    assert [f.index for f in result.failed] == sorted(bad)
    for failure in result.failed:
        err, option = bad[failure.index]
        assert failure.errno in _unix_errno(err)
        assert failure.option is option
        assert failure.fd == core.fileno_of(targets[failure.index])
    assert sorted(result.applied_indices + [f.index for f in result.failed]) == list(range(len(targets)))
    for s in live:
        assert kernel_values(s) == EXPECTED
    with pytest.raises(ka.BulkError) as info:
        result.raise_for_failures()
    assert info.value.errno == errno.EBADF
    assert info.value.failures == result.failed
    assert f"6 of {len(targets)} sockets failed" in str(info.value)


def test_threads_give_identical_results(core: ModuleType, mixed: tuple) -> None:  # type: ignore[type-arg]
    targets, _, _ = mixed
    single = core_apply_many(core, targets, POLICY, 1)
    for threads in (2, 3, 7, 64):
        many = core_apply_many(core, targets, POLICY, threads)
        assert many.errnos == single.errnos
        assert many.options == single.options
        assert many.fds == single.fds
        r1 = core_read_many(core, targets, 1)
        rn = core_read_many(core, targets, threads)
        for column in ("errnos", "options", "enabled", "idle", "interval", "count", "user_timeout_ms"):
            assert getattr(r1, column) == getattr(rn, column), column


def test_both_implementations_agree(mixed: tuple) -> None:  # type: ignore[type-arg]
    targets, _, _ = mixed
    c = importlib.import_module("ka._ka_c") if not _no_ext() else None
    py = importlib.import_module("ka._ka_py")
    if c is None:
        pytest.skip("KA_NO_EXTENSIONS is set: only the twin is under test")
    b = py.apply_many(targets, POLICY, 1, "syscalls")
    backends = ["syscalls", "auto"] + ([] if c.uring_status()[0] else ["io_uring"])
    for backend in backends:
        assert c.apply_many(targets, POLICY, 1, backend) == b, backend
    ra = c.read_many(targets, 2)
    rb = py.read_many(targets, 1)
    assert ra == rb


def _no_ext() -> bool:
    return env_flag("KA_NO_EXTENSIONS")


def test_read_many_columns(core: ModuleType, mixed: tuple) -> None:  # type: ignore[type-arg]
    targets, bad, live = mixed
    core_apply_many(core, live, POLICY)
    result = core_read_many(core, targets)
    assert len(result) == len(targets)
    assert [f.index for f in result.failed] == sorted(bad)
    assert all(f.option is ka.Option.KEEPALIVE or f.option is ka.Option.IDLE for f in result.failed)
    assert result.mismatches(POLICY) == sorted(bad)
    good = [i for i in range(len(targets)) if i not in bad]
    for i in good:
        assert (result.enabled[i], result.idle[i], result.interval[i], result.count[i]) == (1, 41, 9, 6)
        assert result.user_timeout_ms[i] == 95000
        assert result[i] == ka.KeepAliveSettings(True, 41, 9, 6, 95.0)
        assert result[i].matches(POLICY)
    first_bad = min(bad)
    with pytest.raises(OSError) as info:
        result[first_bad]
    assert info.value.errno == bad[first_bad][0]
    settings = list(result)
    assert settings[first_bad] is None and settings[0] is not None


@pytest.mark.parametrize(
    "kind",
    [
        "list",
        "tuple",
        "generator",
        "array_i",
        "array_q",
        "array_l",
        "numpy64",
        "numpy32",
        "numpy_u64",
        "numpy_strided",
    ],
)
def test_target_containers(core: ModuleType, pool100: LoopbackPool, kind: str) -> None:
    socks = pool100.sockets
    fds = [s.fileno() for s in socks]
    targets: object
    expected_n = len(fds)
    if kind == "list":
        targets = list(socks)
    elif kind == "tuple":
        targets = tuple(fds)
    elif kind == "generator":
        targets = (s for s in socks)
    elif kind.startswith("array_"):
        targets = array.array(kind[-1], fds)
    else:
        np = pytest.importorskip("numpy")
        if kind == "numpy64":
            targets = np.array(fds, dtype=np.int64)
        elif kind == "numpy32":
            targets = np.array(fds, dtype=np.int32)
        elif kind == "numpy_u64":
            targets = np.array(fds, dtype=np.uint64)
        else:
            targets = np.array(fds, dtype=np.int64)[::2]
            expected_n = len(fds[::2])
    core_apply_many(core, socks, ka.KeepAlive(idle=5, interval=5, count=5))
    result = core_apply_many(core, targets, POLICY)
    assert result.ok and result.applied == expected_n
    assert list(result.fds) == (fds if kind != "numpy_strided" else fds[::2])
    for s in socks[: expected_n if kind != "numpy_strided" else len(socks)]:
        if kind == "numpy_strided" and s.fileno() not in fds[::2]:
            continue
        assert kernel_values(s) == EXPECTED
    assert core_read_many(core, targets).mismatches(POLICY) == []


def test_bad_containers_raise_before_any_call(core: ModuleType, pool100: LoopbackPool) -> None:
    socks = pool100.sockets
    core_apply_many(core, socks, ka.KeepAlive(idle=5, interval=5, count=5))
    untouched = (1, 5, 5, 5)
    cases: list[tuple[object, type[Exception], str]] = [
        ([socks[0], "x"], TypeError, r"targets\[1\] is str 'x'"),
        ([socks[0], None], TypeError, r"targets\[1\] is NoneType None"),
        ([socks[0], 3.0], TypeError, r"targets\[1\] is float"),
        ([socks[0], True], TypeError, r"targets\[1\] is a bool"),
        ([socks[0], 2**31], ValueError, r"targets\[1\] is 2147483648: not a descriptor number"),
        ([socks[0], -(2**31) - 1], ValueError, "not a descriptor number"),
        ([socks[0], 2**64], ValueError, "not a descriptor number"),
        (array.array("q", [socks[0].fileno(), 2**40]), ValueError, r"targets\[1\] is 1099511627776"),
        (array.array("L", [socks[0].fileno(), 2**32 - 1]), ValueError, r"targets\[1\] is 4294967295"),
        (array.array("d", [1.0]), TypeError, "not format 'd'"),
        (array.array("h", [1]), TypeError, "itemsize 2"),
        (b"\x05\x06", TypeError, "not bytes"),
        ("12", TypeError, "not str"),
        (5, TypeError, "not int"),
    ]
    for targets, error, message in cases:
        with pytest.raises(error, match=message):
            core_apply_many(core, targets, POLICY)
        with pytest.raises(error, match=message):
            core_read_many(core, targets)
    assert kernel_values(socks[0])[:4] == untouched
    np = pytest.importorskip("numpy")
    with pytest.raises(TypeError, match="one-dimensional"):
        core_apply_many(core, np.zeros((2, 2), dtype=np.int64), POLICY)
    with pytest.raises(TypeError, match="not format"):
        core_apply_many(core, np.zeros(3, dtype=np.float64), POLICY)


def test_threads_argument_is_checked() -> None:
    """The face checks threads and the policy before calling the core."""
    with pytest.raises(ValueError, match="threads=0 is out of range"):
        ka.apply_many([], POLICY, threads=0)
    with pytest.raises(ValueError, match="threads=65"):
        ka.read_many([], threads=65)
    with pytest.raises(TypeError, match="threads must be an int"):
        ka.apply_many([], POLICY, threads=2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"policy must be a ka\.KeepAlive"):
        ka.apply_many([], None)  # type: ignore[arg-type]


def test_empty(core: ModuleType) -> None:
    result = core_apply_many(core, [], POLICY)
    assert len(result) == 0 and result.ok and result.failed == [] and result.applied == 0
    result.raise_for_failures()
    assert len(core_read_many(core, array.array("i"))) == 0


@pytest.mark.slow
def test_five_thousand_connections(core: ModuleType) -> None:
    """On 5,000 established connections every socket gets all four values and a keepalive timer."""
    policy = ka.KeepAlive(idle=300, interval=11, count=5, user_timeout="auto")
    with LoopbackPool(5000) as pool:
        result = core_apply_many(core, pool.fds(), policy, 2)
        assert result.ok and result.applied == 5000
        for s in pool.sockets:
            assert kernel_values(s) == (1, 300, 11, 5, 355000)
        read = core_read_many(core, pool.sockets)
        assert read.ok and read.mismatches(policy) == []
        assert set(read.idle) == {300} and set(read.count) == {5}
        port = pool.sockets[0].getsockname()[1]
        timers = ss_timers(port)
        peers = {s.getpeername() for s in pool.sockets}
        assert set(timers) == peers
        for peer, timer in timers.items():
            # e.g. timer:(keepalive,4min59sec,0): a keepalive timer of at most idle, no probe sent yet
            assert timer.startswith("timer:(keepalive,"), (peer, timer)
            assert timer.endswith(",0)"), (peer, timer)
