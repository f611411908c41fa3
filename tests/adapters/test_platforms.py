"""Every OS branch of the C shim, executed here against a recording stand-in.

``tests/standin/recorder.c`` compiles ``src/ka/_platform.h`` for one OS at a time (fake system
headers carrying that OS's constants; setsockopt/getsockopt/WSAIoctl replaced by a recorder).
Each test asserts the exact (call, level, option, value) sequence a branch issues, failures
part-way included, and that the twin (``_ka_py``) issues the same sequence for that OS.
"""

from __future__ import annotations

import array
import ctypes
import errno
import os
from pathlib import Path

import pytest

from ka import _ka_py, _options
from ka._options import OS_CALLS, SIO_KEEPALIVE_VALS, WSAEINVAL, WSAENOPROTOOPT, Option
from standin_build import (
    GET,
    IOCTL,
    OSES,
    SET,
    Call,
    Read,
    c_apply,
    c_read,
    needs_standin,
    recorded_calls,
)

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


INTERNALS = Path(__file__).resolve().parents[2] / "docs" / "performance" / "internals.md"


@needs_standin
@pytest.mark.parametrize("name", ["linux", "darwin", "windows", "freebsd", "netbsd"])
def test_the_internals_page_tells_the_order_the_shim_keeps(
    standins: dict[str, ctypes.CDLL], name: str
) -> None:
    """Issue 19, 4.9: docs/performance/internals.md said SO_KEEPALIVE went last (so a socket was
    never left with keepalive on) and that reads filled in the system defaults off Linux; the
    shim sets SO_KEEPALIVE first on every OS and a read reports only what the kernel answers."""
    sol, ka_opt = N[name][:2]
    calls, err, _ = c_apply(standins[name], (*FULL[:4], -1))
    assert err == 0 and calls[0] == ("set", sol, ka_opt, 1)
    page = " ".join(INTERNALS.read_text().split())
    assert "`SO_KEEPALIVE` first" in page
    for wrong in ("then `SO_KEEPALIVE`)", "never left with keepalive on", "filled in"):
        assert wrong not in page, wrong


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
    assert recorded_calls(lib) == one * n


@needs_standin
@pytest.mark.parametrize("name", OSES)
def test_unsigned_buffers_agree_with_the_twin(
    standins: dict[str, ctypes.CDLL], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 19 item 8: on Windows (8-byte SOCKET handles) the compiled core took an unsigned
    8-byte value past INT64_MAX as a handle where the twin refuses it. The shim's fast-path check
    (ka_first_bad_fd, compiled for each OS) and the twin, run as on that OS, now name the same entry."""
    lib = standins[name]
    lib.rec_first_bad_fd.restype = ctypes.c_longlong
    monkeypatch.setattr(_ka_py, "_WINDOWS", name == "windows")
    monkeypatch.setattr(_ka_py, "_FD_TYPECODE", "q" if name == "windows" else "i")

    def c_first_bad(values: array.array[int]) -> int:
        address, count = values.buffer_info()
        return int(lib.rec_first_bad_fd(ctypes.c_void_p(address), 8, 1, ctypes.c_size_t(count)))

    past = array.array("Q", [5, 2**63, 7])
    assert c_first_bad(past) == 1
    with pytest.raises(ValueError, match="targets\\[1\\] is 9223372036854775808: not a descriptor number"):
        _ka_py.collect_fds(past)
    largest = array.array("Q", [5, 2**63 - 1])
    if name == "windows":  # a handle number: both take it
        assert c_first_bad(largest) == -1 and list(_ka_py.collect_fds(largest)) == [5, 2**63 - 1]
    else:  # no C int: both refuse it
        assert c_first_bad(largest) == 1
        with pytest.raises(ValueError, match="targets\\[1\\] is 9223372036854775807"):
            _ka_py.collect_fds(largest)


@needs_standin
def test_netbsd_reads_back_unknown_where_getsockopt_is_refused(standins: dict[str, ctypes.CDLL]) -> None:
    """Issue 19 item 7: NetBSD's tcp_ctloutput (tcp_usrreq.c 1.209, the newest read) sets
    TCP_KEEPIDLE/INTVL/CNT but answers their getsockopt with ENOPROTOOPT: ka.read reported that as
    a failure of the whole read; it is now an unknown value (None), as on Windows."""
    sol, ka_opt, idle, intvl, cnt, _ = N["netbsd"]
    refused = tuple((GET, 6, name, ENOPROTO) for name in (idle, intvl, cnt))
    preset = ((sol, ka_opt, 1),)
    c = c_read(standins["netbsd"], refused, preset)
    assert c == twin_read("netbsd", refused, preset)
    assert c[1:] == (0, 0, (1, -1, -1, -1, -1))
    # Elsewhere ENOPROTOOPT on a read still fails it (a UDP socket, for one).
    freebsd = tuple((GET, 6, name, ENOPROTO) for name in N["freebsd"][2:5])
    assert c_read(standins["freebsd"], freebsd, preset)[1:3] == (ENOPROTO, Option.IDLE)


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
