"""Checking what callers ask for (ports, process ids, state names) and picking connections by it."""

from __future__ import annotations

import errno
from collections.abc import Iterable

from .model import Connection
from .procfs import STATE_GROUPS, TCP_STATES, thread_group


def _named(name: str, value: object) -> str:
    # A command-line flag reads "--pid 0", a keyword argument "pid=0".
    return f"{name} {value}" if name.startswith("-") else f"{name}={value!r}"


def check_port(value: int | None, name: str) -> int | None:
    """``value`` when it is None or a TCP port (1 to 65535), else ValueError.

    ``name``: the keyword (``local_port``) or command-line flag (``--local-port``) it came by,
    which the message names as given.
    """
    if value is not None and not 0 < value < 65536:
        raise ValueError(f"{_named(name, value)} is not a TCP port: expected 1 to 65535")
    return value


def check_pid(pid: int, name: str = "pid", *, running: bool = False) -> int:
    """``pid`` when it is a positive process id, else ValueError (``name`` as for ``check_port``).

    ``running``: also that it names a running process (ProcessLookupError when none does) and not
    one of its threads (ValueError naming the process). Linux only.
    """
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise ValueError(f"{_named(name, pid)} is not a process id: expected a positive number")
    if running:
        group = thread_group(pid)
        if group is None:
            raise ProcessLookupError(errno.ESRCH, f"there is no process {pid}")
        if group != pid:
            use = _named(name, group)
            raise ValueError(f"{_named(name, pid)} is a thread of process {group}, not a process: use {use}")
    return pid


def normalize_states(states: Iterable[str]) -> frozenset[str]:
    """State names (as ss names them, or ``connected``/``all``) as a set; ValueError if unknown."""
    result: set[str] = set()
    for raw in states:
        name = raw.strip().lower().replace("_", "-")
        if name in STATE_GROUPS:
            result |= STATE_GROUPS[name]
        elif name in TCP_STATES.values():
            result.add(name)
        else:
            known = ", ".join([*sorted(STATE_GROUPS), *TCP_STATES.values()])
            raise ValueError(f"unknown TCP state {raw!r}: expected one of {known}")
    return frozenset(result)


def select(
    conns: Iterable[Connection],
    *,
    local_port: int | None = None,
    remote_port: int | None = None,
    states: frozenset[str] | None = None,
) -> list[Connection]:
    """The connections that pass every filter given (None: no filter)."""
    check_port(local_port, "local_port")
    check_port(remote_port, "remote_port")
    return [
        c
        for c in conns
        if (local_port is None or c.local.port == local_port)
        and (remote_port is None or c.remote.port == remote_port)
        and (states is None or c.state in states)
    ]
