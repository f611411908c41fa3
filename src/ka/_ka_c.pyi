"""Type stubs for the compiled core; every name and signature matches the pure-Python twin (_ka_py.py)."""

from __future__ import annotations

import array
from typing import Any

from .policy import KeepAlive
from .results import KeepAliveSettings

IMPLEMENTATION: str
PLATFORM_CODE: int
LIMITS: tuple[int, ...]
HAVE: tuple[bool, ...]

def fileno_of(target: Any) -> int: ...
def apply(target: Any, policy: KeepAlive) -> None: ...
def read(target: Any) -> KeepAliveSettings: ...
def uring_status() -> tuple[int, str]: ...
def worker_count() -> int: ...
def collect_fds(targets: Any) -> array.array[int]: ...
def apply_many(
    targets: Any, policy: KeepAlive, threads: int, backend: str
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
