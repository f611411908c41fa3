"""tools/check_imports.py against small package trees: cycles and upward arrows found, a clean tree passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "check_imports.py"

pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="tools/ is not next to the tests")

# A small ka: core, model, face and upper modules whose arrows all point down.
CLEAN = {
    "ka/__init__.py": "from .policy import KeepAlive\nfrom . import _impl\n",
    "ka/_impl.py": "import os\nfrom . import _ka_py as core\n",
    "ka/_ka_py.py": "import socket\nfrom ._options import Option\n",
    "ka/_options.py": "import enum\n",
    "ka/policy.py": "from ka._options import Option\n\ndef late():\n    from .errors import BulkError\n",
    "ka/errors.py": "from ._options import Option\n",
    "ka/cli.py": "import ka\nfrom ka.live import apply_pid\n",
    "ka/live/__init__.py": "from .flows import apply_pid\n",
    "ka/live/flows.py": "from ..policy import KeepAlive\nfrom ka import errors\n",
    "ka/integrations/__init__.py": "from ka.policy import KeepAlive\n",
    "ka/integrations/redis.py": "from . import socket_options\nfrom .. import policy\n",
}


def make_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "ka"


def run(package: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(package), *options], capture_output=True, text=True, check=False
    )


def test_clean_tree_passes(tmp_path: Path) -> None:
    result = run(make_tree(tmp_path, CLEAN))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no cycle, none upward" in result.stdout
    assert "11 modules" in result.stdout


def test_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    files = {**CLEAN, "ka/errors.py": "from ._options import Option\n\ndef f():\n    from . import policy\n"}
    result = run(make_tree(tmp_path, files))
    assert result.returncode == 1, result.stdout
    assert "cycle: ka.errors -> ka.policy -> ka.errors" in result.stdout
    assert "ka/errors.py:4" in result.stdout and "ka/policy.py:4" in result.stdout
    assert "upward: ka.errors (leaf) -> ka.policy (model)  [ka/errors.py:4]" in result.stdout


def test_longer_cycle_is_listed_in_order(tmp_path: Path) -> None:
    files = {
        **CLEAN,
        "ka/policy.py": "from .system import defaults\n",
        "ka/system.py": "from .results import Settings\n",
        "ka/results.py": "import ka.policy\n",
    }
    result = run(make_tree(tmp_path, files))
    assert result.returncode == 1
    assert "cycle: ka.policy -> ka.system -> ka.results -> ka.policy" in result.stdout


def test_type_checking_imports_count_unless_runtime_only(tmp_path: Path) -> None:
    files = {
        **CLEAN,
        "ka/errors.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .results import R\n",
        "ka/results.py": "from .errors import BulkError\n",
    }
    package = make_tree(tmp_path, files)
    result = run(package)
    assert result.returncode == 1
    assert "cycle: ka.errors -> ka.results -> ka.errors" in result.stdout
    assert "ka/errors.py:3, under TYPE_CHECKING" in result.stdout
    assert run(package, "--runtime-only").returncode == 0


def test_upward_arrow_is_found(tmp_path: Path) -> None:
    files = {**CLEAN, "ka/__init__.py": CLEAN["ka/__init__.py"] + "from . import integrations\n"}
    result = run(make_tree(tmp_path, files))
    assert result.returncode == 1
    assert "upward: ka (face) -> ka.integrations (upper)  [ka/__init__.py:3]" in result.stdout
    assert "cycle" not in result.stdout


def test_upward_arrows_into_a_package_and_from_the_core(tmp_path: Path) -> None:
    files = {
        **CLEAN,
        "ka/policy.py": "def f():\n    from ka.live.flows import apply_pid\n",
        "ka/_options.py": "from .policy import KeepAlive\n",
    }
    result = run(make_tree(tmp_path, files))
    assert result.returncode == 1
    assert "upward: ka.policy (model) -> ka.live.flows (upper)  [ka/policy.py:2]" in result.stdout
    assert "upward: ka._options (leaf) -> ka.policy (model)" in result.stdout


def test_name_from_the_face_beside_a_module_is_an_arrow_to_the_face(tmp_path: Path) -> None:
    files = {
        **CLEAN,
        "ka/__init__.py": CLEAN["ka/__init__.py"] + "from .system import defaults\n",
        "ka/system.py": "from ka import policy, KeepAlive\n",
    }
    result = run(make_tree(tmp_path, files))
    assert result.returncode == 1
    assert "upward: ka.system (model) -> ka (face)  [ka/system.py:1]" in result.stdout
    assert "cycle: ka -> ka.system -> ka" in result.stdout  # the face imports system
    assert "-> ka.policy (" not in result.stdout  # an arrow within the model layer is fine


def test_cython_module_imports_are_read(tmp_path: Path) -> None:
    pyx = "cimport cython\nfrom libc.string cimport memcpy\nimport errno\nfrom .errors import (\n    x,\n)\n"
    files = {**CLEAN, "ka/_ka_c.pyx": pyx + "from .live.flows import apply_pid  # upward\n"}
    result = run(make_tree(tmp_path, files))
    assert result.returncode == 1
    assert "-> ka.errors" not in result.stdout  # the core may import the leaf
    assert "upward: ka._ka_c (core) -> ka.live.flows (upper)  [ka/_ka_c.pyx:7]" in result.stdout
    assert "cimport" not in result.stdout and "libc" not in result.stdout


def test_module_in_no_layer_is_reported(tmp_path: Path) -> None:
    result = run(make_tree(tmp_path, {**CLEAN, "ka/newthing.py": "import os\n"}))
    assert result.returncode == 2
    assert "ka.newthing: in no layer" in result.stdout


def test_private_names_taken_from_another_module_are_found(tmp_path: Path) -> None:
    files = {
        **CLEAN,
        "ka/policy.py": "def _helper():\n    pass\n",
        "ka/cli.py": "from ka import live\nfrom .policy import _helper\nlive._check()\n",
        "ka/live/flows.py": "from .. import _impl\nfrom ..policy import KeepAlive\n_impl.core\n",
    }
    result = run(make_tree(tmp_path, files))
    assert result.returncode == 1
    assert "private: ka/cli.py:2 imports _helper from ka.policy" in result.stdout
    assert "private: ka/cli.py:3 reads live._check of ka.live" in result.stdout
    assert "ka/live/flows.py" not in result.stdout  # a private module's public name is fine


def test_the_real_tree_is_clean() -> None:
    """ka itself: no cycle, nothing upward, no private name across modules."""
    source = SCRIPT.parent.parent / "src" / "ka"
    if not source.is_dir():
        pytest.skip("no source tree beside tools/ (an installed wheel under test)")
    result = run(source)
    assert result.returncode == 0, result.stdout
