"""Bad input is refused with a clear ValueError/TypeError before any system call.

Extends tests/unit/test_policy.py and tests/core/test_bulk.py (no case repeated): float rounding edges,
huge and exotic numbers, bad targets, policies and thread counts for apply, apply_many, read and
read_many. Two proofs that nothing reached the kernel: a live socket's options are unchanged
afterwards (both implementations, in this process), and ``strace`` sees no setsockopt/getsockopt
between two markers while a child process runs every case (each implementation), yet sees them
for a good call right after.
"""

from __future__ import annotations

import array
import datetime
import decimal
import fractions
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import pytest

import ka
from helpers import kernel_values
from ka._impl import env_flag

CAPS = ka.capabilities()
GOOD = ka.KeepAlive(idle=5, interval=2, count=3)
KA = ka.KeepAlive
HERE = Path(__file__).resolve().parent


class Fileno:
    """An object whose fileno() returns whatever it was given."""

    def __init__(self, value: object) -> None:
        self.value = value

    def fileno(self) -> object:
        return self.value

    def __repr__(self) -> str:
        return f"Fileno({self.value!r})"


def _closed_file() -> Any:
    with tempfile.TemporaryFile() as f:
        pass
    return f


Call = Callable[[ModuleType, socket.socket], object]


class Case(NamedTuple):
    id: str
    call: Call  # given a core module and a live TCP socket that must stay untouched
    error: type[Exception]
    match: str
    per_core: bool  # a call into the core (run with each implementation), or policy/face checks (run once)


def case(id: str, call: Call, error: type[Exception], match: str) -> Case:
    """Refused above the core (KeepAlive, the face's threads argument): the core is never called."""
    return Case(id, call, error, match, per_core=False)


def core_case(id: str, call: Call, error: type[Exception], match: str) -> Case:
    """Refused by the core itself (its targets and policies): checked with each implementation."""
    return Case(id, call, error, match, per_core=True)


_UT_MAX_S = CAPS.max_user_timeout_ms / 1000

CASES = [
    # KeepAlive: rounding edges, exotic numbers, huge values
    case(
        "idle tiny negative float",
        lambda k, s: KA(idle=-1e-9),
        ValueError,
        "idle must be positive, not -1e-09",
    ),
    case("idle negative zero", lambda k, s: KA(idle=-0.0), ValueError, "idle must be positive, not -0.0"),
    case(
        "idle one microsecond over the max",
        lambda k, s: KA(idle=CAPS.max_idle + 1e-6),
        ValueError,
        f"idle={CAPS.max_idle + 1e-6!r} is out of range",
    ),
    case(
        "interval rounds to one microsecond over the max",
        lambda k, s: KA(interval=CAPS.max_interval + 6e-7),
        ValueError,
        "interval takes 1 to",
    ),
    case("idle 1e303 (overflows when scaled)", lambda k, s: KA(idle=1e303), ValueError, "out of range"),
    case("idle max float", lambda k, s: KA(idle=sys.float_info.max), ValueError, "out of range"),
    case(
        "idle huge Fraction",
        lambda k, s: KA(idle=fractions.Fraction(10**400)),  # type: ignore[arg-type]
        ValueError,
        "out of range",
    ),
    case(
        "interval negative Fraction",
        lambda k, s: KA(interval=fractions.Fraction(-1, 2)),  # type: ignore[arg-type]
        ValueError,
        "interval must be positive",
    ),
    case("idle Decimal", lambda k, s: KA(idle=decimal.Decimal(5)), TypeError, "not Decimal"),  # type: ignore[arg-type]
    case("idle None-like string", lambda k, s: KA(idle="None"), TypeError, "not str 'None'"),  # type: ignore[arg-type]
    case(
        "interval timedelta.max", lambda k, s: KA(interval=datetime.timedelta.max), ValueError, "out of range"
    ),
    case(
        "interval -1 microsecond",
        lambda k, s: KA(interval=datetime.timedelta(microseconds=-1)),
        ValueError,
        "interval must be positive",
    ),
    case(
        "count -2**64",
        lambda k, s: KA(count=-(2**64)),
        ValueError,
        "count=-18446744073709551616 is out of range",
    ),
    case(
        "count Fraction",
        lambda k, s: KA(count=fractions.Fraction(3)),  # type: ignore[arg-type]
        TypeError,
        "count must be a whole number of probes",
    ),
    case("count Decimal", lambda k, s: KA(count=decimal.Decimal(3)), TypeError, "not Decimal"),  # type: ignore[arg-type]
    case("count NaN", lambda k, s: KA(count=math.nan), TypeError, "not float nan"),  # type: ignore[arg-type]
    case(
        "auto without count", lambda k, s: KA(2, 1, None, user_timeout="auto"), ValueError, "needs all three"
    ),
    case(
        "user_timeout negative timedelta",
        lambda k, s: KA(user_timeout=datetime.timedelta(seconds=-1)),
        ValueError,
        "user_timeout must be positive",
    ),
    case("user_timeout inf", lambda k, s: KA(user_timeout=math.inf), ValueError, "finite"),
    case(
        "user_timeout 'AUTO'",
        lambda k, s: KA(user_timeout="AUTO"),  # type: ignore[arg-type]
        ValueError,
        "'auto', 0 or None, not 'AUTO'",
    ),
    case("user_timeout bytes", lambda k, s: KA(user_timeout=b"auto"), TypeError, "not bytes"),  # type: ignore[arg-type]
    case("enabled str", lambda k, s: KA(enabled="yes"), TypeError, "enabled must be True or False"),  # type: ignore[arg-type]
    case(
        "disabled with count",
        lambda k, s: KA(count=1, enabled=False),
        ValueError,
        "takes no idle, interval or count",
    ),
    case("within NaN", lambda k, s: KA.within(math.nan), ValueError, "deadline must be a finite number"),
    case("within just under 2 s", lambda k, s: KA.within(1.999), ValueError, "deadline=1.999 is too short"),
    case("within bool", lambda k, s: KA.within(True), TypeError, "deadline must be a number"),
    case("within negative", lambda k, s: KA.within(-5), ValueError, "deadline must be positive"),
    case("within count 0", lambda k, s: KA.within(30, count=0), ValueError, "count=0 is out of range"),
    case("replace negative idle", lambda k, s: GOOD.replace(idle=-1), ValueError, "idle must be positive"),
    case("replace enabled None", lambda k, s: GOOD.replace(enabled=None), TypeError, "enabled must be True"),
    # apply / read: targets and policies
    core_case("apply None target", lambda k, s: k.apply(None, GOOD), TypeError, "target is NoneType None"),
    core_case("apply float target", lambda k, s: k.apply(1.5, GOOD), TypeError, "target is float 1.5"),
    core_case("apply str target", lambda k, s: k.apply(str(s.fileno()), GOOD), TypeError, "target is str"),
    core_case("apply bool target", lambda k, s: k.apply(True, GOOD), TypeError, "target is a bool"),
    core_case(
        "apply fd 2**31",
        lambda k, s: k.apply(2**31, GOOD),
        ValueError,
        "target is 2147483648: not a descriptor",
    ),
    core_case(
        "apply fd -2**63-1", lambda k, s: k.apply(-(2**63) - 1, GOOD), ValueError, "not a descriptor number"
    ),
    core_case(
        "apply fileno() -> str",
        lambda k, s: k.apply(Fileno(str(s.fileno())), GOOD),
        TypeError,
        r"target.fileno\(\) returned str",
    ),
    core_case(
        "apply fileno() -> 2**40",
        lambda k, s: k.apply(Fileno(2**40), GOOD),
        ValueError,
        r"target.fileno\(\) returned 1099511627776",
    ),
    core_case(
        "apply fileno() -> bool",
        lambda k, s: k.apply(Fileno(True), GOOD),
        TypeError,
        r"fileno\(\) returned bool",
    ),
    core_case(
        "apply closed file object", lambda k, s: k.apply(_closed_file(), GOOD), ValueError, "closed file"
    ),
    core_case(
        "apply policy None",
        lambda k, s: k.apply(s, None),
        TypeError,
        "policy must be a ka.KeepAlive, not NoneType",
    ),
    core_case("apply policy dict", lambda k, s: k.apply(s, {"idle": 5}), TypeError, "not dict"),
    core_case("apply raw spec tuple", lambda k, s: k.apply(s, (1, 5, 2, 3, -1)), TypeError, "not tuple"),
    core_case("apply the class", lambda k, s: k.apply(s, ka.KeepAlive), TypeError, "not type"),
    core_case("read None", lambda k, s: k.read(None), TypeError, "target is NoneType None"),
    core_case("read fd 2**63", lambda k, s: k.read(2**63), ValueError, "not a descriptor number"),
    # apply_many: a bad entry after good ones stops the whole call before any of them is applied
    core_case(
        "apply_many None entry last",
        lambda k, s: k.apply_many([s, s, None], GOOD, 1, "syscalls"),
        TypeError,
        r"targets\[2\] is NoneType None",
    ),
    core_case(
        "apply_many nested list",
        lambda k, s: k.apply_many([s, [s]], GOOD, 1, "syscalls"),
        TypeError,
        r"targets\[1\] is list",
    ),
    core_case(
        "apply_many fileno() -> 2**40",
        lambda k, s: k.apply_many([s, Fileno(2**40)], GOOD, 1, "syscalls"),
        ValueError,
        r"targets\[1\]\.fileno\(\) returned 1099511627776",
    ),
    core_case(
        "apply_many generator, bad late",
        lambda k, s: k.apply_many((t for t in [s, "x"]), GOOD, 1, "syscalls"),
        TypeError,
        r"targets\[1\] is str 'x'",
    ),
    case(
        "apply_many array('i') threads -1",
        lambda k, s: ka.apply_many(array.array("i", [s.fileno()]), GOOD, threads=-1),
        ValueError,
        "threads=-1 is out of range",
    ),
    case(
        "apply_many threads True",
        lambda k, s: ka.apply_many([s], GOOD, threads=True),
        TypeError,
        "threads must be an int or None, not bool",
    ),
    case("apply_many threads '2'", lambda k, s: ka.apply_many([s], GOOD, threads="2"), TypeError, "not str"),  # type: ignore[arg-type]
    case(
        "apply_many threads 10**20",
        lambda k, s: ka.apply_many([s], GOOD, threads=10**20),
        ValueError,
        "threads=100000000000000000000 is out of range",
    ),
    core_case(
        "apply_many targets None",
        lambda k, s: k.apply_many(None, GOOD, 1, "syscalls"),
        TypeError,
        "not NoneType",
    ),
    core_case(
        "apply_many policy None",
        lambda k, s: k.apply_many([s], None, 1, "syscalls"),
        TypeError,
        "policy must be",
    ),
    core_case(
        "apply_many policy as kwargs dict",
        lambda k, s: k.apply_many([s], GOOD.as_dict(), 1, "syscalls"),
        TypeError,
        "not dict",
    ),
    # read_many
    core_case(
        "read_many float entry", lambda k, s: k.read_many([s, 1.0], 1), TypeError, r"targets\[1\] is float"
    ),
    core_case(
        "read_many fd 2**63",
        lambda k, s: k.read_many([s, 2**63], 1),
        ValueError,
        r"targets\[1\] is 9223372036854775808",
    ),
    case("read_many threads -3", lambda k, s: ka.read_many([s], threads=-3), ValueError, "threads=-3"),
    case("read_many threads 2.0", lambda k, s: ka.read_many([s], threads=2.0), TypeError, "not float"),  # type: ignore[arg-type]
    core_case("read_many targets int", lambda k, s: k.read_many(s.fileno(), 1), TypeError, "not int"),
    core_case("read_many bytes", lambda k, s: k.read_many(b"\x01", 1), TypeError, "not bytes"),
]
if CAPS.user_timeout:
    CASES.append(
        case(
            "user_timeout one millisecond over the max",
            lambda k, s: KA(user_timeout=_UT_MAX_S + 0.001),
            ValueError,
            "user_timeout takes 0.001 to",
        )
    )


def run_case(c: Case, core: ModuleType, sock: socket.socket) -> tuple[str, str]:
    """Run one case; (exception type name, message), or ("no error", "")."""
    try:
        c.call(core, sock)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return "no error", ""


@pytest.fixture
def untouched(pair: tuple[socket.socket, socket.socket]) -> socket.socket:
    """A connected socket set to a known policy, to show that no bad call changes it."""
    client, _ = pair
    ka.apply(client, ka.KeepAlive(idle=31, interval=11, count=7, user_timeout=3.5))
    return client


def _refused_and_untouched(c: Case, core: ModuleType, untouched: socket.socket) -> None:
    before = kernel_values(untouched)
    with pytest.raises(c.error, match=c.match) as info:
        c.call(core, untouched)
    message = str(info.value)
    assert message[:1].isalpha() and len(message) > 10, message
    assert kernel_values(untouched) == before


CORE_CASES = [c for c in CASES if c.per_core]
ONCE_CASES = [c for c in CASES if not c.per_core]


@pytest.mark.parametrize("c", CORE_CASES, ids=[c.id for c in CORE_CASES])
def test_the_core_refuses_bad_input_and_leaves_the_socket_untouched(
    core: ModuleType, untouched: socket.socket, c: Case
) -> None:
    _refused_and_untouched(c, core, untouched)


@pytest.mark.parametrize("c", ONCE_CASES, ids=[c.id for c in ONCE_CASES])
def test_bad_policies_and_threads_are_refused_above_the_core(untouched: socket.socket, c: Case) -> None:
    _refused_and_untouched(c, ka, untouched)  # these cases never reach a core


_CHILD = r"""
import importlib, json, os, socket, sys
sys.path[:0] = sys.argv[1:3]
import ka
import test_bad_input as t
sock = socket.socket()
null = os.open(os.devnull, os.O_WRONLY)
os.write(null, b"KA-MARK-BEGIN")
core = importlib.import_module("ka._ka_c" if ka.IMPLEMENTATION == "c" else "ka._ka_py")
outcomes = [(c.id,) + t.run_case(c, core, sock) for c in t.CASES]
os.write(null, b"KA-MARK-END")
ka.apply(sock, t.GOOD)
ka.apply_many([sock.fileno()] * 4, t.GOOD, threads=2)
ka.read_many([sock.fileno()])
os.write(null, b"KA-MARK-DONE")
print(json.dumps({"implementation": ka.IMPLEMENTATION, "outcomes": outcomes}))
"""


def _traced_lines(trace: str) -> tuple[list[str], list[str]]:
    """Socket-option calls between BEGIN and END, and between END and DONE."""
    lines = trace.splitlines()
    marks = {}
    for i, line in enumerate(lines):
        for mark in ("BEGIN", "END", "DONE"):
            if f'"KA-MARK-{mark}"' in line:
                marks[mark] = i
    assert set(marks) == {"BEGIN", "END", "DONE"}, "markers missing from the trace"
    calls = [(i, line) for i, line in enumerate(lines) if "setsockopt(" in line or "getsockopt(" in line]
    during = [line for i, line in calls if marks["BEGIN"] < i < marks["END"]]
    after = [line for i, line in calls if marks["END"] < i < marks["DONE"]]
    return during, after


@pytest.mark.skipif(
    shutil.which("strace") is None, reason="the 'strace' command is missing (Debian package strace)"
)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="strace is Linux only")
@pytest.mark.parametrize("implementation", ["c", "python"])
def test_strace_sees_no_socket_option_call(implementation: str, tmp_path: Path) -> None:
    if implementation == "c" and env_flag("KA_NO_EXTENSIONS"):
        pytest.skip("KA_NO_EXTENSIONS is set: the compiled core is not under test")
    env = dict(os.environ)
    env.pop("KA_NO_EXTENSIONS", None)
    env["KA_NO_EXTENSIONS" if implementation == "python" else "KA_REQUIRE_EXTENSIONS"] = "1"
    out = tmp_path / "trace"
    proc = subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=setsockopt,getsockopt,write",
            "-o",
            str(out),
            sys.executable,
            "-c",
            _CHILD,
            str(HERE),
            str(HERE.parent),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0 and "ptrace" in proc.stderr:
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["implementation"] == implementation
    got = {row[0]: (row[1], row[2]) for row in report["outcomes"]}
    for c in CASES:
        name, message = got[c.id]
        assert name == c.error.__name__, (c.id, name, message)
    during, after = _traced_lines(out.read_text())
    assert during == [], f"socket option calls during bad input: {during[:5]}"
    # The tracer does see ka's calls, from the worker threads too.
    assert sum("setsockopt(" in line for line in after) >= 5 * 4, after
    assert any("getsockopt(" in line for line in after)
