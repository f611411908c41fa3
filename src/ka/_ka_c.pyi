"""Type stubs for the compiled core; every name and signature matches the pure-Python twin (_ka_py.py)."""

from __future__ import annotations

import array
from typing import Any

IMPLEMENTATION: str
PLATFORM_CODE: int
LIMITS: tuple[int, ...]
HAVE: tuple[bool, ...]

def fileno_of(target: Any) -> int: ...
def apply(target: Any, spec: tuple[int, int, int, int, int]) -> None: ...
def read(target: Any) -> tuple[int, int, int, int, int]: ...
def collect_fds(targets: Any) -> array.array[int]: ...
def apply_many(
    targets: Any, spec: tuple[int, int, int, int, int], threads: int
) -> tuple[array.array[int], array.array[int], array.array[int], int]: ...
def read_many(
    targets: Any, threads: int
) -> tuple[
    array.array[int],
    array.array[int],
    array.array[int],
    array.array[int],
    array.array[int],
    array.array[int],
    array.array[int],
    array.array[int],
    int,
]: ...
