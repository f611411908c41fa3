"""``--cgroup`` and ``--unit`` against a real cgroup v2 made by the test: ``ka show`` and ``ka audit``
pick the process moved into it and not its twin outside. Root and cgroup v2 (skips otherwise);
the cgroups are named with this test's pid and always removed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

from ka.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from ka.live import cgroup
from live_helpers import EchoServer, echo_server, ka_command, linux_only, made_cgroup, run_json

pytestmark = linux_only


class Placed(NamedTuple):
    group: cgroup.Cgroup
    inside: EchoServer  # 3 connections, moved into the group
    outside: EchoServer  # 2 connections, left where it was


@pytest.fixture
def placed() -> Iterator[Placed]:
    with made_cgroup("ka-audit") as group, echo_server(3, 0) as inside, echo_server(2, 0) as outside:
        (group.directory / "cgroup.procs").write_text(str(inside.pid))
        assert cgroup.of_pid(inside.pid) == group and cgroup.of_pid(outside.pid) != group
        yield Placed(group, inside, outside)


def picked(command: str, *selection: str, expect: int = EXIT_FAILED) -> list[tuple[int, int]]:
    """(pid, connections) of each process ``ka COMMAND SELECTION --json`` reports."""
    if command == "audit":
        data: Any = run_json("audit", *selection, "--max-detection", "1h", expect=expect)
        return [(p["pid"], p["connections"]) for p in data["processes"]]
    data = run_json("show", *selection, "--state", "connected")
    return [(p["pid"], len(p["connections"])) for p in data["processes"]]


@pytest.mark.parametrize("command", ["show", "audit"])
def test_cgroup_and_unit_pick_the_process_inside(placed: Placed, command: str) -> None:
    group, inside = placed.group, placed.inside
    want = [(inside.pid, 3)]
    assert picked(command, "--cgroup", group.path) == want  # as /proc/PID/cgroup shows it
    assert picked(command, "--cgroup", str(group.directory)) == want  # the directory itself
    assert picked(command, "--cgroup", group.path.rsplit("/", 1)[0]) == want  # the slice: below it too
    unit = group.directory.name
    assert picked(command, "--unit", unit) == want  # found by name under the mount
    assert picked(command, "--unit", unit.removesuffix(".service")) == want  # .service implied


def test_selection_kinds_narrow_across_cgroups(placed: Placed) -> None:
    group, inside, outside = placed
    # --pid of the process outside and --cgroup: a process must pass both, so none is picked.
    assert picked("audit", "--cgroup", group.path, "--pid", str(outside.pid), expect=EXIT_OK) == []
    assert picked("audit", "--cgroup", group.path, "--pid", str(inside.pid)) == [(inside.pid, 3)]
    # Two groups widen: the made one and the outside process's own.
    theirs = cgroup.of_pid(outside.pid).path
    both = picked("audit", "--cgroup", group.path, "--cgroup", theirs, "--pid", str(outside.pid))
    assert both == [(outside.pid, 2)]


def test_a_cgroup_or_unit_that_is_not_there_is_a_usage_error(placed: Placed) -> None:
    missing = f"{placed.group.path}-gone"
    out = ka_command("audit", "--cgroup", missing, "--max-detection", "1h")
    assert out.returncode == EXIT_USAGE and f"no cgroup {missing!r}" in out.stderr, out.stderr
    out = ka_command("show", "--unit", f"ka-never-{os.getpid()}")
    assert out.returncode == EXIT_USAGE and f"unit ka-never-{os.getpid()}.service" in out.stderr, out.stderr
