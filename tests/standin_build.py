"""The recording stand-in (tests/standin): the C shim compiled for one OS at a time against fake
system headers, its setsockopt/getsockopt/WSAIoctl recorded, driven through ctypes.

``build_all`` (the ``standins`` fixture of tests/conftest.py) builds one library per OS;
``c_apply``/``c_read`` run the shim's ``ka_apply_one``/``ka_read_one`` and return the exact
(call, level, option, value) sequence. ``KA_SHIM_DIR`` points at another copy of the shim
headers (an older checkout) to show what a change of the shim changed.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
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


def build(os_name: str, out: Path) -> subprocess.Popen[bytes]:
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


def build_all(out: Path) -> dict[str, ctypes.CDLL]:
    """One recorder library per OS, compiled in parallel into ``out`` (the ``standins`` fixture)."""
    builds = {name: build(name, out / f"rec-{name}.so") for name in OSES}
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
    return recorded_calls(lib), err, option.value


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
    return recorded_calls(lib), err, option.value, tuple(out)


def recorded_calls(lib: ctypes.CDLL) -> list[Call]:
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
