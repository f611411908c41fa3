"""Scanning: every process this one may reach, and the connections each holds."""

from __future__ import annotations

import os

from .filters import select
from .flows import read
from .model import NotPermitted, ProcessConnections, Scan, Skipped, TcpEntry
from .procfs import command_name, connections, process_ids


def scan(
    *,
    local_port: int | None = None,
    remote_port: int | None = None,
    states: frozenset[str] | None = None,
) -> Scan:
    """Every process but this one, read as ``read`` reads one: those holding connections that pass
    the filters (as ``select`` takes them), and those skipped, without ptrace permission or with
    trouble reading them. A process that exits while it is looked at is left out."""
    found: list[ProcessConnections] = []
    skipped: list[Skipped] = []
    tables: dict[int, dict[int, TcpEntry]] = {}
    me = os.getpid()
    for pid in process_ids():
        if pid == me:
            continue
        try:
            conns = select(
                connections(pid, tables), local_port=local_port, remote_port=remote_port, states=states
            )
            if conns:
                found.append(ProcessConnections(pid, read(pid, conns)))
        except NotPermitted:
            skipped.append(Skipped(pid, command_name(pid), "no ptrace permission"))
        except (ProcessLookupError, FileNotFoundError):
            continue  # exited while we looked
        except OSError as exc:  # one process's trouble does not end the listing
            skipped.append(Skipped(pid, command_name(pid), str(exc)))
    return Scan(found, skipped)
