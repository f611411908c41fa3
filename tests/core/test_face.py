"""The face (``ka``) runs on the active core: its functions are that core's, and it says which."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

import ka
from ka import _impl
from ka._impl import env_flag


def _implementation_in_child(**env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k not in ("KA_NO_EXTENSIONS", "KA_REQUIRE_EXTENSIONS")}
    done = subprocess.run(
        [sys.executable, "-c", "import ka; print(ka.IMPLEMENTATION, ka.read is ka._impl.core.read)"],
        capture_output=True,
        text=True,
        env={**environ, **env},
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_apply_and_read_are_the_active_cores() -> None:
    assert ka.apply is _impl.core.apply
    assert ka.read is _impl.core.read
    assert ka.IMPLEMENTATION == _impl.core.IMPLEMENTATION


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_no_extensions_selects_the_twin(value: str) -> None:
    assert _implementation_in_child(KA_NO_EXTENSIONS=value) == "python True"


def _require_compiled_core() -> None:
    if sys.implementation.name != "cpython":
        pytest.skip("the compiled core is for CPython")
    try:
        import ka._ka_c  # noqa: F401
    except ImportError as exc:
        if env_flag("KA_REQUIRE_EXTENSIONS"):
            raise
        pytest.skip(f"the compiled core is not built here: {exc}")


def test_the_compiled_core_is_active_by_default() -> None:
    _require_compiled_core()
    assert _implementation_in_child() == "c True"


@pytest.mark.parametrize("value", ["0", "false", "No", "off", ""])
def test_a_false_no_extensions_keeps_the_compiled_core(value: str) -> None:
    """Issue 23: KA_NO_EXTENSIONS=0 selected the twin (any non-empty value counted)."""
    _require_compiled_core()
    assert _implementation_in_child(KA_NO_EXTENSIONS=value) == "c True"


def _import_in_child(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("KA_NO_EXTENSIONS", "KA_REQUIRE_EXTENSIONS")}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**environ, **env},
        timeout=60,
        check=False,
    )


def test_an_unknown_no_extensions_value_is_refused_by_name() -> None:
    done = _import_in_child("import ka", KA_NO_EXTENSIONS="maybe")
    assert done.returncode != 0
    expected = "ValueError: KA_NO_EXTENSIONS='maybe' is not an on/off value: expected 1, true, yes or on"
    assert expected in done.stderr


# ``None`` in sys.modules makes ``import ka._ka_c`` raise ImportError, as a broken build would.
_BROKEN_CORE = (
    "import sys; sys.modules['ka._ka_c'] = None\n"
    "import ka; print(ka.IMPLEMENTATION, ka.read is ka._impl.core.read)"
)


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="elsewhere the twin is chosen, no fallback")
def test_a_compiled_core_that_fails_to_import_falls_back_with_a_warning() -> None:
    """Issue 23: the fallback to the twin (2.5x slower) was silent; it names the import error."""
    done = _import_in_child(_BROKEN_CORE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "python True"
    warning = "RuntimeWarning: the compiled core of ka could not be imported (ModuleNotFoundError: "
    assert warning in done.stderr
    assert "import of ka._ka_c halted; None in sys.modules" in done.stderr
    # Chosen on purpose: no warning.
    quiet = _import_in_child(_BROKEN_CORE, KA_NO_EXTENSIONS="1")
    assert quiet.returncode == 0 and quiet.stdout.strip() == "python True" and not quiet.stderr, quiet.stderr


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="the compiled core is for CPython")
def test_require_extensions_turns_the_fallback_into_the_import_error() -> None:
    done = _import_in_child(_BROKEN_CORE, KA_REQUIRE_EXTENSIONS="1")
    assert done.returncode != 0
    assert "ModuleNotFoundError: import of ka._ka_c halted" in done.stderr
    assert "RuntimeWarning" not in done.stderr
    assert _import_in_child(_BROKEN_CORE, KA_REQUIRE_EXTENSIONS="0").stdout.strip() == "python True"


def test_apply_many_and_read_many_reach_the_active_core(pair: tuple[socket.socket, socket.socket]) -> None:
    client, _ = pair
    policy = ka.KeepAlive(idle=21, interval=4, count=3)
    with mock.patch.object(_impl.core, "apply_many", wraps=_impl.core.apply_many) as apply_many:
        assert ka.apply_many([client], policy).ok
    apply_many.assert_called_once_with([client], policy, 1, "auto")
    with mock.patch.object(_impl.core, "read_many", wraps=_impl.core.read_many) as read_many:
        assert ka.read_many([client]).idle[0] == 21
    read_many.assert_called_once_with([client], 1)


def test_the_face_shows_its_public_names_only() -> None:
    """Issue 15: dir(ka) used to show core, os, Any, NamedTuple, LIMITS, PLATFORM, require_policy."""
    assert dir(ka) == sorted(ka.__all__)
    for name in ka.__all__:
        assert getattr(ka, name) is not None, name
    for leaked in (
        "core",
        "os",
        "Any",
        "NamedTuple",
        "LIMITS",
        "PLATFORM",
        "require_policy",
        "socket_options",
    ):
        assert leaked not in dir(ka), leaked


def test_importing_ka_imports_no_upper_layer() -> None:
    """The face used to import ka.integrations (an upper layer) to re-export socket_options.
    The layers are tools/check_imports.py's table, the one CI checks the import graph with."""
    script = Path(__file__).resolve().parents[2] / "tools" / "check_imports.py"
    if not script.exists():
        pytest.skip("tools/ is not beside the tests (an installed wheel under test)")
    spec = importlib.util.spec_from_file_location("check_imports", script)
    assert spec is not None and spec.loader is not None
    layers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layers)
    code = "import sys, ka; print(' '.join(sorted(m for m in sys.modules if m.startswith('ka.'))))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = done.stdout.split()
    assert "ka.policy" in loaded and "ka.bulk" in loaded
    upper = [module for module in loaded if layers.layer_of(module) == "upper"]
    assert not upper, upper


def test_the_version_is_the_distributions() -> None:
    """Written once, in ka.__version__; setuptools reads the distribution's version from it."""
    from importlib import metadata

    try:
        installed = metadata.version("ka")
    except metadata.PackageNotFoundError:
        pytest.skip("ka is not installed as a distribution here")
    assert ka.__version__ == installed


def test_listener_facts_have_one_source() -> None:
    from ka.server import Platform

    caps = ka.capabilities()
    here = Platform.current()
    assert (here.name, here.listener_inherits, here.listener_safe) == (
        caps.platform,
        caps.listener_inherits,
        caps.listener_safe,
    )
