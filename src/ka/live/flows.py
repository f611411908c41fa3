"""Reading and applying: one process's connections, a chunk of duplicates at a time."""

from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import Iterator, Sequence
from typing import Any

from .. import apply_many, read_many
from .._options import Option
from ..policy import KeepAlive, require_policy
from ..protocol import Spec
from ..results import KeepAliveSettings, settings_of
from .model import ApplyReport, Change, Connection, ConnectionState, NotPermitted, Status
from .pidfd import Duplicates, Process
from .procfs import tcp_table


def _option_name(option: int) -> str:
    return Option(option).system_name


def read(pid: int, conns: Sequence[Connection]) -> list[ConnectionState]:
    """The keepalive values of a process's connections, read through duplicates (bulk path)."""
    states: list[ConnectionState] = []
    if not conns:
        return states
    with Process(pid) as proc:
        try:
            _read_chunks(proc, conns, states)
        except ProcessLookupError as exc:
            if not states:
                raise
            states.extend(ConnectionState(c, None, exc.strerror) for c in conns[len(states) :])
    return states


def _read_chunks(proc: Process, conns: Sequence[Connection], states: list[ConnectionState]) -> None:
    """Reads the connections a chunk at a time, appending one state per connection.

    Connections with equal values share one ``KeepAliveSettings`` (a server's connections mostly
    carry the same few): one dict lookup per connection instead of building its values."""
    known: dict[tuple[int, int, int, int, int], KeepAliveSettings] = {}
    for dups in proc.chunks(conns):
        values = read_many(dups.fds)
        columns = zip(values.enabled, values.idle, values.interval, values.count, values.user_timeout_ms)
        for i, (conn, gone, err, key) in enumerate(zip(dups.conns, dups.gone, values.errnos, columns)):
            if gone is not None:
                states.append(ConnectionState(conn, None, gone))
            elif err:
                reading = _option_name(values.options[i])
                states.append(ConnectionState(conn, None, f"{os.strerror(err)} reading {reading}"))
            else:
                settings = known.get(key)
                if settings is None:
                    settings = known[key] = settings_of(Spec(*key))
                states.append(ConnectionState(conn, settings, None))


def dead_peer_after(settings: KeepAliveSettings) -> float | None:
    """Seconds of silence after which the kernel drops a connection with these values (see
    ``ka.units.detection_time``); None when keepalive is off or a value is unknown."""
    return settings.detection_time


def predicted(before: KeepAliveSettings, policy: KeepAlive) -> KeepAliveSettings:
    """The values a socket with ``before`` will carry once ``policy`` is applied."""
    changed = {option.field: value for option, value in policy.spec.steps()}
    return settings_of(before.spec._replace(**changed))


def apply(pid: int, conns: Sequence[Connection], policy: KeepAlive, *, dry_run: bool = False) -> ApplyReport:
    """Apply ``policy`` to a process's connections through duplicates, and read each one back.

    Each chunk of descriptors is duplicated completely before any is changed, so a missing
    permission (``NotPermitted``, raised by the first duplicate) leaves every socket as it was.
    ``dry_run``: read only; each ``Change`` says what would change.
    A socket whose values read back differ from the policy is ``failed``.
    """
    require_policy(policy)
    changes: list[Change] = []
    if not conns:
        return ApplyReport(pid, policy, dry_run, changes)
    with Process(pid) as proc:
        try:
            for dups in proc.chunks(conns):
                before = read_many(dups.fds)
                if dry_run:
                    changes.extend(_planned(dups, before, policy))
                    continue
                result = apply_many(dups.fds, policy)
                after = read_many(dups.fds)
                changes.extend(_outcomes(dups, before, result, after, policy))
        except ProcessLookupError as exc:
            if not changes:
                raise  # nothing was touched: the caller reports the one reason
            # Exited part way: it holds the rest no more, as for a connection closed since listing.
            changes.extend(
                Change(connection=c, status=Status.GONE, timer=c.timer, error=str(exc.strerror or exc))
                for c in conns[len(changes) :]
            )
        except NotPermitted as exc:
            if not changes:
                raise  # nothing was touched: the caller reports the one reason
            # Lost permission part way: the rest is reported, not dropped.
            changes.extend(
                Change(
                    connection=c,
                    status=Status.FAILED,
                    timer=c.timer,
                    error=str(exc.strerror or exc),
                    errno=exc.errno or errno.EPERM,
                )
                for c in conns[len(changes) :]
            )
    if not dry_run:
        changes = _with_new_timers(pid, changes)
    return ApplyReport(pid, policy, dry_run, changes)


def _gone(dups: Duplicates, i: int) -> Change | None:
    """The ``gone`` change of connection ``i`` of a chunk, or None while its socket is there."""
    conn, reason = dups.conns[i], dups.gone[i]
    if reason is None:
        return None
    return Change(connection=conn, status=Status.GONE, timer=conn.timer, error=reason)


def _planned(dups: Duplicates, before: Any, policy: KeepAlive) -> Iterator[Change]:
    for i, conn in enumerate(dups.conns):
        gone = _gone(dups, i)
        if gone is not None:
            yield gone
        elif before.errnos[i]:
            err = before.errnos[i]
            option = _option_name(before.options[i])
            yield Change(
                connection=conn,
                status=Status.FAILED,
                timer=conn.timer,
                error=f"{os.strerror(err)} reading {option}",
                errno=err,
                option=option,
            )
        else:
            now = before[i]
            yield Change(
                connection=conn,
                status=Status.ALREADY_SET if now.matches(policy) else Status.WOULD_CHANGE,
                timer=conn.timer,
                before=now,
                after=predicted(now, policy),
            )


def _outcomes(dups: Duplicates, before: Any, result: Any, after: Any, policy: KeepAlive) -> Iterator[Change]:
    mismatched = set(after.mismatches(policy))
    for i, conn in enumerate(dups.conns):
        gone = _gone(dups, i)
        if gone is not None:
            yield gone
            continue
        was = None if before.errnos[i] else before[i]
        now = None if after.errnos[i] else after[i]
        err = result.errnos[i]
        if err:
            option: str | None = _option_name(result.options[i])
            error = f"{os.strerror(err)} setting {option}"
        elif i in mismatched:
            # Applied without an error, yet the kernel reports other values (or cannot be read).
            option, err = None, after.errnos[i]
            error = (
                f"{os.strerror(err)} reading it back"
                if err
                else "the values read back differ from the policy"
            )
        else:
            yield Change(connection=conn, status=Status.APPLIED, timer=conn.timer, before=was, after=now)
            continue
        yield Change(
            connection=conn,
            status=Status.FAILED,
            timer=conn.timer,
            before=was,
            after=now,
            error=error,
            errno=err,
            option=option,
        )


def _with_new_timers(pid: int, changes: list[Change]) -> list[Change]:
    try:
        table = tcp_table(pid, {c.connection.inode for c in changes})
    except OSError:
        return changes
    return [
        dataclasses.replace(c, timer=table[c.connection.inode].timer) if c.connection.inode in table else c
        for c in changes
    ]
