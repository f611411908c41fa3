"""Fixtures of the ka guard tests (tests/kernel/test_guard*.py): a private BPF filesystem and
the test's own servers, one of each per module, always removed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from guard_helpers import Servers


@pytest.fixture(scope="module")
def bpffs() -> Iterator[Path]:
    """A BPF filesystem of the module's own, never /sys/fs/bpf."""
    from guard_helpers import private_bpffs  # here: the other kernel tests need none of it

    with private_bpffs() as directory:
        yield directory


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    """IPv4 and IPv6 listeners outside every test cgroup, holding what they accept."""
    from guard_helpers import Servers

    made = Servers()
    try:
        yield made
    finally:
        made.close()
