"""Fixtures shared by the whole suite: each implementation of the core, socket pairs and pools,
the ka guard tests' BPF filesystem and servers."""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

import standin_build
from helpers import loopback_pair
from ka._impl import env_flag
from ka.bench.pool import LoopbackPool

if TYPE_CHECKING:
    from guard_helpers import Servers

# A shell starts a background job with SIGINT ignored (POSIX), and exec passes "ignored" on: run
# so (CI started with &, nohup), Python installs no KeyboardInterrupt handler, here or in the
# children the Ctrl-C tests start, and those tests fail. Ctrl-C is what they test: restore it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

IMPLEMENTATIONS = ["c", "python"]


@pytest.fixture(params=IMPLEMENTATIONS, scope="session")
def core(request: pytest.FixtureRequest) -> ModuleType:
    """Each implementation's module, imported directly: the core tests call it (``core.apply``,
    ``core.apply_many(targets, policy, threads, backend)``), whatever ``ka`` itself chose.

    The compiled one is skipped under KA_NO_EXTENSIONS, or where it cannot be imported, unless
    KA_REQUIRE_EXTENSIONS is set: then a missing or broken extension fails the tests.
    """
    if request.param == "python":
        return importlib.import_module("ka._ka_py")
    if env_flag("KA_NO_EXTENSIONS"):
        pytest.skip("KA_NO_EXTENSIONS is set: the compiled core is not under test")
    try:
        return importlib.import_module("ka._ka_c")
    except ImportError as exc:
        if env_flag("KA_REQUIRE_EXTENSIONS"):
            raise
        pytest.skip(f"the compiled core cannot be imported here: {exc}")


@pytest.fixture(scope="session")
def standins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ctypes.CDLL]:
    """The C shim compiled for every OS against the recording stand-in (tests/standin_build.py)."""
    return standin_build.build_all(tmp_path_factory.mktemp("standin"))


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected loopback TCP pair: (client, accepted)."""
    with loopback_pair() as both:
        yield both


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


@pytest.fixture(scope="module")
def pool100() -> Iterator[LoopbackPool]:
    with LoopbackPool(100) as pool:
        yield pool


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Any], Any]:
    """Runs a coroutine on a fresh event loop: the stdlib's, then uvloop's where installed."""
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed")
        return uvloop.run  # type: ignore[no-any-return]
    return asyncio.run


@pytest.fixture(scope="module")
def guard_bpffs() -> Iterator[Path]:
    """ka guard tests: a BPF filesystem of the module's own, never /sys/fs/bpf."""
    from guard_helpers import private_bpffs  # here: the other kernel tests need none of it

    with private_bpffs() as directory:
        yield directory


@pytest.fixture(scope="module")
def guard_servers() -> Iterator[Servers]:
    """ka guard tests: IPv4 and IPv6 listeners outside every test cgroup, holding what they accept."""
    from guard_helpers import Servers

    made = Servers()
    try:
        yield made
    finally:
        made.close()
