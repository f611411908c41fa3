"""The compiled core's headers stand in layers (issue 19, item 5): _platform.h's base (the OS
header), then _ka_fds.h, then _ka_uring.h, then _ka_bulk.h over both. A header that used a name
from one above it (as _ka_uring.h used _ka_bulk.h's ka_fd_at) closed a circle the include lines
did not show; each layer is compiled here with only what lies below it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from helpers import SHIM_DIR
from standin_build import CC

SRC = Path(SHIM_DIR)  # the tree's headers, or the installed package's when run from outside it
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (gcc or cc) on PATH")


def _base() -> str:
    """_platform.h up to the line that includes _ka_bulk.h: the OS header and the option setters."""
    text = (SRC / "_platform.h").read_text()
    cut = text.index('#include "_ka_bulk.h"')
    return text[:cut]


def _compile(source: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    unit = tmp_path / "layer.c"
    unit.write_text(source)
    return subprocess.run(
        [str(CC), "-fsyntax-only", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror",
         "-Wno-unused-function", "-Werror=implicit-function-declaration", f"-I{SRC}", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("header", ["_ka_fds.h", "_ka_uring.h"])
def test_a_lower_layer_compiles_without_the_bulk_header(header: str, tmp_path: Path) -> None:
    done = _compile(f'{_base()}\n#include "{header}"\n#endif\n', tmp_path)
    assert done.returncode == 0, f"{header} needs something above it:\n{done.stderr}"


def test_the_whole_header_compiles(tmp_path: Path) -> None:
    done = _compile('#include "_platform.h"\n', tmp_path)
    assert done.returncode == 0, done.stderr


def test_the_include_lines_have_no_circle() -> None:
    includes = {
        path.name: re.findall(r'^\s*#\s*include\s+"([^"]+)"', path.read_text(), re.MULTILINE)
        for path in SRC.glob("*.h")
    }

    def reaches(start: str, goal: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(
            child == goal or (child not in seen and reaches(child, goal, seen | {child}))
            for child in includes.get(start, [])
        )

    assert not [name for name in includes if reaches(name, name)]
    assert includes["_ka_uring.h"] == ["_ka_fds.h"]
