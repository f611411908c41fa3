"""Every OS branch of the C shim, executed here against a recording stand-in.

``tests/standin/recorder.c`` compiles ``src/ka/_platform.h`` for one OS at a time (fake system
headers carrying that OS's constants; setsockopt/getsockopt/WSAIoctl replaced by a recorder).
Each test asserts the exact (call, level, option, value) sequence a branch issues, failures
part-way included, and that the twin (``_ka_py``) issues the same sequence for that OS.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ka import _ka_py, _options
from ka._options import OS_CALLS, SIO_KEEPALIVE_VALS, WSAEINVAL, WSAENOPROTOOPT, Option

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "tests" / "standin"
# The shim headers under test; another directory (an older checkout) shows what a fix changed.
SHIM = Path(os.environ.get("KA_SHIM_DIR", ROOT / "src" / "ka"))
OSES = ["linux", "darwin", "freebsd", "netbsd", "openbsd", "windows"]
CC = shutil.which("gcc") or shutil.which("cc")

needs_standin = pytest.mark.skipif(
    not sys.platform.startswith("linux") or CC is None or not (ROOT / "src/ka/_platform.h").exists(),
    reason="the stand-in builds with a Linux C compiler from the source tree",
)

SET, GET, IOCTL = 0, 1, 2
KIND_NAMES = {SET: "set", GET: "get", IOCTL: "ioctl"}
Call = tuple[Any, ...]


class RecCall(ctypes.Structure):
    _fields_ = [  # ctypes layout, not a mutable default
        ("kind", ctypes.c_int),
        ("level", ctypes.c_int),
        ("name", ctypes.c_int),
        ("value", ctypes.c_longlong),
        ("v2", ctypes.c_longlong),
        ("v3", ctypes.c_longlong),
        ("result", ctypes.c_int),
    ]


def _build(os_name: str, out: Path) -> subprocess.Popen[bytes]:
    # No -Werror: this also runs in the wheel containers' older compilers; the warning-free
    # builds for every real target are tools/check_platforms.sh's job.
    family = "windows" if os_name == "windows" else "posix"
    flags = [] if os_name == "linux" else ["-U__linux__", "-U__linux", "-Ulinux", "-U__unix__"]
    assert CC is not None
    return subprocess.Popen(
        [CC, "-std=c99", "-Wall", "-Wextra", "-Wno-unused-function", "-shared", "-fPIC",
         f"-DKA_STANDIN_{os_name.upper()}", "-DKA_NO_URING", *flags,
         "-I", str(STANDIN / family), "-I", str(SHIM),
         str(STANDIN / "recorder.c"), "-o", str(out), "-lpthread"],
        stderr=subprocess.PIPE,
    )  # fmt: skip


@pytest.fixture(scope="session")
def standins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ctypes.CDLL]:
    """One recorder library per OS, compiled in parallel."""
    out = tmp_path_factory.mktemp("standin")
    builds = {name: _build(name, out / f"rec-{name}.so") for name in OSES}
    libs = {}
    for name, proc in builds.items():
        _, err = proc.communicate()
        assert proc.returncode == 0, f"stand-in for {name} failed to compile:\n{err.decode()}"
        lib = ctypes.CDLL(str(out / f"rec-{name}.so"))
        lib.rec_calls.restype = ctypes.POINTER(RecCall)
        lib.rec_limit.restype = ctypes.c_longlong
        libs[name] = lib
    return libs


def c_apply(
    lib: ctypes.CDLL, spec: tuple[int, ...], fail: tuple[Call, ...] = ()
) -> tuple[list[Call], int, int]:
    """(calls, error, option) of the shim's ka_apply_one; ``fail``: (kind, level, name, err)."""
    lib.rec_reset()
    for rule in fail:
        lib.rec_fail(*rule)
    option = ctypes.c_int(-9)
    err = lib.rec_apply(*spec, ctypes.byref(option))
    return _calls(lib), err, option.value


Read = tuple[list[Call], int, int, tuple[int, ...]]


def c_read(lib: ctypes.CDLL, fail: tuple[Call, ...] = (), preset: tuple[Call, ...] = ()) -> Read:
    lib.rec_reset()
    for rule in fail:
        lib.rec_fail(*rule)
    for level, name, value in preset:
        lib.rec_preset(level, name, value)
    out = (ctypes.c_int * 5)()
    option = ctypes.c_int(-9)
    err = lib.rec_read(out, ctypes.byref(option))
    return _calls(lib), err, option.value, tuple(out)


def _calls(lib: ctypes.CDLL) -> list[Call]:
    calls = lib.rec_calls()
    result: list[Call] = []
    for i in range(lib.rec_count()):
        c = calls[i]
        if c.kind == IOCTL:
            result.append(("ioctl", c.name & 0xFFFFFFFF, c.value, c.v2, c.v3))
        elif c.kind == SET:
            result.append(("set", c.level, c.name, c.value))
        else:
            result.append(("get", c.level, c.name))
    return result


# exc.errno for a Winsock code (CPython's PC/errmap.h: WSAEINVAL -> 22, WSAEACCES -> 13; the rest
# stay as they are, and Windows' errno.ENOPROTOOPT is 10042, shown here as this host's ENOPROTOOPT)
_CPYTHON_ERRNO = {WSAENOPROTOOPT: errno.ENOPROTOOPT, WSAEINVAL: errno.EINVAL, 10013: errno.EACCES}


class FakeSocket:
    """What the twin calls, recorded; failures raised as CPython raises them on that OS."""

    def __init__(self, calls: _options.OSCalls, fail: tuple[Call, ...] = (), preset: tuple[Call, ...] = ()):
        self.os = calls
        self.fail = fail
        self.log: list[Call] = []
        self.values = {(level, name): value for level, name, value in preset}

    def _check(self, kind: int, level: int, name: int) -> None:
        for k, lv, nm, err in self.fail:
            if k == kind and lv in (-1, level) and nm == name:
                if self.os.windows:  # CPython maps Winsock codes through winerror_to_errno
                    mapped = _CPYTHON_ERRNO.get(err, err)
                    exc = OSError(mapped, "stand-in")
                    exc.winerror = err  # type: ignore[attr-defined]
                    raise exc
                raise OSError(err, os.strerror(err))

    def setsockopt(self, level: int, name: int, value: int) -> None:
        self.log.append(("set", level, name, value))
        self._check(SET, level, name)
        self.values[(level, name)] = value

    def getsockopt(self, level: int, name: int) -> int:
        self.log.append(("get", level, name))
        self._check(GET, level, name)
        return int(self.values.get((level, name), 0))

    def ioctl(self, code: int, value: tuple[int, int, int]) -> None:
        self.log.append(("ioctl", code, *value))
        self._check(IOCTL, -1, code)


def twin_apply(
    os_name: str, spec: tuple[int, ...], fail: tuple[Call, ...] = ()
) -> tuple[list[Call], int, int]:
    sock = FakeSocket(OS_CALLS[os_name], fail)
    err, option = _ka_py._apply_sock(sock, spec, OS_CALLS[os_name])  # type: ignore[arg-type]
    return sock.log, err, int(option)


def twin_read(os_name: str, fail: tuple[Call, ...] = (), preset: tuple[Call, ...] = ()) -> Read:
    sock = FakeSocket(OS_CALLS[os_name], fail, preset)
    err, option, values = _ka_py._read_sock(sock, OS_CALLS[os_name])
    return sock.log, err, int(option), values


# Per OS: (SOL_SOCKET, SO_KEEPALIVE, idle, interval, count, user timeout) as the SDK headers say.
N = {name: (c.sol_socket, c.so_keepalive, *c.numbers.values()) for name, c in OS_CALLS.items()}
FULL = (1, 60, 10, 5, 30500)  # enable, idle s, interval s, count, user timeout ms
ENOPROTO = errno.ENOPROTOOPT


def expected_full(name: str) -> list[Call]:
    """The sequence FULL makes on an OS with every knob: SO_KEEPALIVE first."""
    sol, ka_opt, idle, intvl, cnt, uto = N[name]
    seq: list[Call] = [
        ("set", sol, ka_opt, 1),
        ("set", 6, idle, 60),
        ("set", 6, intvl, 10),
        ("set", 6, cnt, 5),
    ]
    value = {"linux": 30500, "darwin": 31, "windows": 30500}[name]  # macOS: whole seconds, rounded up
    return [*seq, ("set", 6, uto, value)]


@needs_standin
@pytest.mark.parametrize("name", ["linux", "darwin", "windows"])
def test_full_policy_sequence(standins: dict[str, ctypes.CDLL], name: str) -> None:
    """Defect 1: SO_KEEPALIVE first on every OS (XNU arms the timer with the socket's idle only
    if SO_KEEPALIVE is already on); the user timeout maps to each OS's option."""
    want = expected_full(name)
    assert c_apply(standins[name], FULL) == (want, 0, 0)
    assert twin_apply(name, FULL) == (want, 0, 0)


@needs_standin
@pytest.mark.parametrize("name", ["freebsd", "netbsd"])
def test_bsd_sequence(standins: dict[str, ctypes.CDLL], name: str) -> None:
    sol, ka_opt, idle, intvl, cnt, _ = N[name]
    want = [("set", sol, ka_opt, 1), ("set", 6, idle, 60), ("set", 6, intvl, 10), ("set", 6, cnt, 5)]
    spec = (*FULL[:4], -1)
    assert c_apply(standins[name], spec) == (want, 0, 0)
    assert twin_apply(name, spec) == (want, 0, 0)
    # No user timeout on the BSDs: refused after the keepalive options, naming the option.
    assert c_apply(standins[name], FULL) == (want, ENOPROTO, Option.USER_TIMEOUT)
    assert twin_apply(name, FULL) == (want, ENOPROTO, Option.USER_TIMEOUT)


@needs_standin
def test_openbsd_has_no_knobs(standins: dict[str, ctypes.CDLL]) -> None:
    """Defect 8: OpenBSD's knobs do not exist; the build says so (HAVE 0), nothing vanishes."""
    lib = standins["openbsd"]
    assert [lib.rec_have(i) for i in range(4)] == [0, 0, 0, 0]
    want = [("set", 0xFFFF, 8, 1)]
    assert c_apply(lib, FULL) == (want, ENOPROTO, Option.IDLE)
    assert twin_apply("openbsd", FULL) == (want, ENOPROTO, Option.IDLE)
    assert c_apply(lib, (1, -1, -1, -1, -1)) == (want, 0, 0)


@needs_standin
@pytest.mark.parametrize("name", OSES)
def test_failure_part_way(standins: dict[str, ctypes.CDLL], name: str) -> None:
    """A failing option stops the sequence there and is named; earlier ones stay applied."""
    sol, ka_opt, idle, intvl, _, _ = N[name]
    if intvl is None:
        pytest.skip(f"{name} has no TCP_KEEPINTVL")
    fail: tuple[Call, ...] = ((SET, 6, intvl, errno.EPERM),)
    want = [("set", sol, ka_opt, 1), ("set", 6, idle, 60), ("set", 6, intvl, 10)]
    assert c_apply(standins[name], FULL, fail) == (want, errno.EPERM, Option.INTERVAL)
    assert twin_apply(name, FULL, fail) == (want, errno.EPERM, Option.INTERVAL)
    fail = ((SET, 0xFFFF if name != "linux" else 1, ka_opt, errno.EBADF),)
    assert c_apply(standins[name], FULL, fail)[1:] == (errno.EBADF, Option.KEEPALIVE)
    assert twin_apply(name, FULL, fail)[1:] == (errno.EBADF, Option.KEEPALIVE)


@needs_standin
@pytest.mark.parametrize("name", OSES)
def test_disabled_policy(standins: dict[str, ctypes.CDLL], name: str) -> None:
    sol, ka_opt = N[name][:2]
    spec = (0, -1, -1, -1, -1)
    assert c_apply(standins[name], spec) == ([("set", sol, ka_opt, 0)], 0, 0)
    assert twin_apply(name, spec) == ([("set", sol, ka_opt, 0)], 0, 0)


OLD_WINDOWS = (  # before 10 1703 (and Wine): TCP_KEEPIDLE/INTVL/CNT and TCP_MAXRTMS missing
    (SET, 6, 3, WSAENOPROTOOPT),
    (SET, 6, 17, WSAENOPROTOOPT),
    (SET, 6, 16, WSAENOPROTOOPT),
    (SET, 6, 14, WSAENOPROTOOPT),
    (GET, 6, 3, WSAENOPROTOOPT),
    (GET, 6, 17, WSAENOPROTOOPT),
    (GET, 6, 16, WSAENOPROTOOPT),
    (GET, 6, 14, WSAENOPROTOOPT),
)


@needs_standin
def test_old_windows_fallback(standins: dict[str, ctypes.CDLL]) -> None:
    """Defects 4 and 6: on a build without TCP_KEEPIDLE/TCP_KEEPCNT, SO_KEEPALIVE and the ioctl
    are applied before the count is reported missing (it used to return before both); the twin
    sees WSAENOPROTOOPT through exc.winerror and reports the same Winsock code."""
    lib = standins["windows"]
    want = [
        ("set", 0xFFFF, 8, 1),
        ("set", 6, 3, 60),
        ("ioctl", SIO_KEEPALIVE_VALS, 1, 60000, 10000),
        ("set", 6, 16, 5),
    ]
    assert c_apply(lib, FULL, OLD_WINDOWS) == (want, WSAENOPROTOOPT, Option.COUNT)
    assert twin_apply("windows", FULL, OLD_WINDOWS) == (want, WSAENOPROTOOPT, Option.COUNT)
    # Without a count, the whole policy applies; the user timeout falls back to TCP_MAXRT (s).
    spec = (1, 60, 10, -1, 30500)
    want = [*want[:3], ("set", 6, 14, 30500), ("set", 6, 5, 31)]
    assert c_apply(lib, spec, OLD_WINDOWS) == (want, 0, 0)
    assert twin_apply("windows", spec, OLD_WINDOWS) == (want, 0, 0)
    # WSAEINVAL (what some builds answer) takes the same fallback.
    einval = tuple((k, lv, nm, WSAEINVAL) for k, lv, nm, _ in OLD_WINDOWS)
    assert c_apply(lib, spec, einval)[0] == twin_apply("windows", spec, einval)[0] == want


@needs_standin
def test_old_windows_interval_alone_is_refused(standins: dict[str, ctypes.CDLL]) -> None:
    """Defect 5: SIO_KEEPALIVE_VALS cannot leave the idle as it is; an interval alone used to
    force the idle to 2 h. Now it is refused (as Go does), with no ioctl."""
    want: list[Call] = [("set", 0xFFFF, 8, 1), ("set", 6, 17, 10)]
    spec = (1, -1, 10, -1, -1)
    assert c_apply(standins["windows"], spec, OLD_WINDOWS) == (want, WSAENOPROTOOPT, Option.INTERVAL)
    assert twin_apply("windows", spec, OLD_WINDOWS) == (want, WSAENOPROTOOPT, Option.INTERVAL)
    # An idle alone takes the documented 1 s interval.
    want = [("set", 0xFFFF, 8, 1), ("set", 6, 3, 60), ("ioctl", SIO_KEEPALIVE_VALS, 1, 60000, 1000)]
    spec = (1, 60, -1, -1, -1)
    assert c_apply(standins["windows"], spec, OLD_WINDOWS) == (want, 0, 0)
    assert twin_apply("windows", spec, OLD_WINDOWS) == (want, 0, 0)


@needs_standin
@pytest.mark.parametrize("name", OSES)
def test_read_sequence(standins: dict[str, ctypes.CDLL], name: str) -> None:
    sol, ka_opt, *knobs = N[name]
    uto = knobs[3]
    preset = [(sol, ka_opt, 8), *((6, n, v) for n, v in zip(knobs, (60, 10, 5)) if n is not None)]
    if uto is not None:
        preset.append((6, uto, 31 if name == "darwin" else 30500))
    calls, err, option, values = c_read(standins[name], preset=tuple(preset))
    assert (calls, err, option, values) == twin_read(name, preset=tuple(preset))
    assert calls == [("get", sol, ka_opt), *(("get", 6, n) for n in knobs if n is not None)]
    have = [n is not None for n in knobs]
    expect_uto = 31000 if name == "darwin" else 30500
    assert values == (
        1,
        *(v if h else -1 for v, h in zip((60, 10, 5), have)),
        expect_uto if have[3] else -1,
    )


@needs_standin
def test_old_windows_read_reports_unknown(standins: dict[str, ctypes.CDLL]) -> None:
    """Defect 3 (core): after the fallback, idle/interval/count cannot be read: -1, not a default."""
    calls, err, option, values = c_read(standins["windows"], OLD_WINDOWS, ((0xFFFF, 8, 1), (6, 5, 31)))
    assert (calls, err, option, values) == twin_read("windows", OLD_WINDOWS, ((0xFFFF, 8, 1), (6, 5, 31)))
    assert values == (1, -1, -1, -1, 31000)
    assert calls[-1] == ("get", 6, 5)  # TCP_MAXRT after TCP_MAXRTMS was missing


@needs_standin
@pytest.mark.parametrize("name", OSES)
def test_limits_and_knobs_agree_with_twin(standins: dict[str, ctypes.CDLL], name: str) -> None:
    """Defect 2 (macOS caps at 2147483 s, as XNU's int32 ms timer allows) and the tables of
    _options.py equal the header's for every OS."""
    lib = standins[name]
    key = {"netbsd": "freebsd", "openbsd": "freebsd"}.get(name, name)
    limits = _options.LIMITS_BY_PLATFORM[key]
    assert tuple(lib.rec_limit(i) for i in range(4)) == tuple(limits)
    have = tuple(bool(lib.rec_have(i)) for i in range(4))
    assert have == tuple(n is not None for n in OS_CALLS[name].numbers.values())
    assert lib.rec_platform() == _options.PLATFORM_CODES[key]
    if name == "darwin":
        assert limits.max_idle == limits.max_interval == 2147483


@needs_standin
def test_bulk_path_on_old_windows(standins: dict[str, ctypes.CDLL]) -> None:
    """The bulk machinery over the Windows branch: each descriptor makes the single-socket
    sequence, and every one is reported with its error and option."""
    lib = standins["windows"]
    lib.rec_reset()
    for rule in OLD_WINDOWS:
        lib.rec_fail(*rule)
    n = 3
    errnos = (ctypes.c_int32 * n)()
    options = (ctypes.c_uint8 * n)()
    lib.rec_apply_bulk.restype = ctypes.c_size_t
    failed = lib.rec_apply_bulk(ctypes.c_size_t(n), *FULL, errnos, options)
    assert failed == n
    assert list(errnos) == [WSAENOPROTOOPT] * n and list(options) == [Option.COUNT] * n
    one = twin_apply("windows", FULL, OLD_WINDOWS)[0]
    assert _calls(lib) == one * n


# Issue 24: values the stand-in can tell apart. A Winsock code CPython maps to another errno
# (PC/errmap.h: WSAEACCES -> EACCES) shows whether the twin reports exc.winerror, as the shim
# reports WSAGetLastError(), at each call that can fail.
# (The stand-in keeps 8 failure rules: OLD_WINDOWS[:4] are its setsockopt ones.)
WSAEACCES = 10013


@needs_standin
@pytest.mark.parametrize("ms", [1, 999, 1000, 1001, 30000, 30001])
def test_old_windows_user_timeout_rounds_up(standins: dict[str, ctypes.CDLL], ms: int) -> None:
    spec = (1, 60, 10, -1, ms)
    seconds = (ms + 999) // 1000  # TCP_MAXRT takes seconds: never shorter than asked
    calls, err, option = twin_apply("windows", spec, OLD_WINDOWS)
    assert calls[-2:] == [("set", 6, 14, ms), ("set", 6, 5, seconds)] and (err, option) == (0, 0)
    assert c_apply(standins["windows"], spec, OLD_WINDOWS) == (calls, 0, 0)


@needs_standin
@pytest.mark.parametrize(
    ("fail", "spec", "option"),
    [
        (((SET, 0xFFFF, 8, WSAEACCES),), FULL, Option.KEEPALIVE),
        (((SET, 6, 3, WSAEACCES),), FULL, Option.IDLE),  # not "missing": no fallback
        (((SET, 6, 16, WSAEACCES),), FULL, Option.COUNT),
        (((SET, 6, 14, WSAEACCES),), FULL, Option.USER_TIMEOUT),
        ((*OLD_WINDOWS[:4], (IOCTL, -1, SIO_KEEPALIVE_VALS, WSAEACCES)), FULL, Option.IDLE),
        (
            (*OLD_WINDOWS[:4], (SET, 6, 5, WSAEACCES)),
            (1, 60, 10, -1, 30500),
            Option.USER_TIMEOUT,
        ),  # TCP_MAXRT
    ],
)
def test_windows_failures_report_the_winsock_code(
    standins: dict[str, ctypes.CDLL], fail: tuple[Call, ...], spec: tuple[int, ...], option: Option
) -> None:
    calls, err, failed = twin_apply("windows", spec, fail)
    assert (err, failed) == (WSAEACCES, option)  # not 13, CPython's exc.errno
    assert c_apply(standins["windows"], spec, fail) == (calls, err, failed)


@needs_standin
@pytest.mark.parametrize(
    ("fail", "option"),
    [(((GET, 0xFFFF, 8, WSAEACCES),), Option.KEEPALIVE), (((GET, 6, 17, WSAEACCES),), Option.INTERVAL)],
)
def test_windows_read_failures_report_the_winsock_code(
    standins: dict[str, ctypes.CDLL], fail: tuple[Call, ...], option: Option
) -> None:
    calls, err, failed, values = twin_read("windows", fail)
    assert (err, failed) == (WSAEACCES, option)
    assert c_read(standins["windows"], fail) == (calls, err, failed, values)


@needs_standin
@pytest.mark.parametrize(
    ("seconds", "ms"),
    [(0, 0), (31, 31000), (2147483, 2147483000), (2147484, -1), (-5, -1)],  # beyond an int of ms: unknown
)
def test_old_windows_user_timeout_read_back(standins: dict[str, ctypes.CDLL], seconds: int, ms: int) -> None:
    preset = ((0xFFFF, 8, 1), (6, 5, seconds))  # TCP_MAXRT (s), read where TCP_MAXRTMS is missing
    calls, err, option, values = twin_read("windows", OLD_WINDOWS, preset)
    assert (err, option, values) == (0, 0, (1, -1, -1, -1, ms))
    assert c_read(standins["windows"], OLD_WINDOWS, preset) == (calls, err, option, values)


@needs_standin
def test_user_timeout_read_edges(standins: dict[str, ctypes.CDLL]) -> None:
    # macOS reads TCP_RXT_CONNDROPTIME in seconds: the largest whose milliseconds fit an int
    preset = ((0xFFFF, 8, 1), (6, 0x80, 2147483))
    calls, err, option, values = twin_read("darwin", preset=preset)
    assert (err, values[4]) == (0, 2147483000)
    assert c_read(standins["darwin"], preset=preset) == (calls, err, option, values)
    # a failing user-timeout read names that option
    fail: tuple[Call, ...] = ((GET, 6, 18, errno.EPERM),)
    calls, err, option, values = twin_read("linux", fail)
    assert (err, option) == (errno.EPERM, Option.USER_TIMEOUT)
    assert c_read(standins["linux"], fail) == (calls, err, option, values)
