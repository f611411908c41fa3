"""Fixtures shared by the whole suite: both implementations, socket pairs and pools."""

from __future__ import annotations

import importlib
import os
import socket
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

import ka
from ka.bench.pool import LoopbackPool

IMPLEMENTATIONS = ["c", "python"]


@pytest.fixture(params=IMPLEMENTATIONS, scope="session")
def core(request: pytest.FixtureRequest) -> ModuleType:
    """Each implementation, imported directly so a broken extension fails instead of falling back."""
    if request.param == "c":
        if os.environ.get("KA_NO_EXTENSIONS"):
            pytest.skip("KA_NO_EXTENSIONS is set: the compiled core is not under test")
        return importlib.import_module("ka._ka_c")
    return importlib.import_module("ka._ka_py")


@pytest.fixture
def impl(core: ModuleType, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Makes the public face (ka.apply, ka.apply_many, ...) use one implementation.

    ka.apply and ka.read are the active core's own functions, bound by name in modules that
    imported them (ka.server, ka.aio, ...): each such binding is swapped too.
    """
    from ka import _impl, bulk, facts

    active = {attr: getattr(_impl.core, attr) for attr in ("apply", "read")}
    for module in (_impl, bulk, facts):
        monkeypatch.setattr(module, "core", core)
    for name, module in list(sys.modules.items()):
        if (
            module is None
            or name in ("ka._ka_c", "ka._ka_py")
            or not (name == "ka" or name.startswith("ka."))
        ):
            continue
        for attr, function in active.items():
            if getattr(module, attr, None) is function:
                monkeypatch.setattr(module, attr, getattr(core, attr))
    return core


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected loopback TCP pair: (client, accepted)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    with client, accepted:
        yield client, accepted


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


@pytest.fixture(scope="module")
def pool100() -> Iterator[LoopbackPool]:
    with LoopbackPool(100) as pool:
        yield pool
