"""``ka.probe.measure``: one thread, one selector, the plan's steps carried out on real sockets.

Every connection the run opens is in ``_Run.connections`` from the moment its socket exists (the
creation and the entry are one step that SIGINT cannot split), and every exit path, an
interruption included, closes them all with a reset before it returns or raises.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import math
import os
import selectors
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Union

from .._signals import signals_deferred
from ..system import descriptor_use
from ..units import microseconds
from .lines import Address, Connection, Gone, parse_target, resolve
from .plan import PAYLOAD_EVERY, Plan, Precision, Progress, Role, Settings
from .result import ProbeResult, build_result

__all__ = ["CONNECT_TIMEOUT", "Interrupted", "ProbeError", "measure"]

CONNECT_TIMEOUT = 10.0  # seconds for a connection to be established
POLL_PROBE = 0.02  # seconds between reads of a line whose test probe is out
POLL_LINES = 0.25  # seconds between reads of the keepalive and payload lines
CLOSED_AT_ONCE = 1.0  # a flow closed this soon after it opened was refused, not timed out
# Connections are opened a few at a time: a burst can overflow the service's accept queue, and a
# connection whose last handshake ACK was dropped there looks established here but not there
# (its first probe meets a reset, as from a NAT that forgot it).
CONNECTING_AT_ONCE = 4
OPEN_GAP = 0.025  # seconds between two connects


class ProbeError(OSError):
    """The path could not be measured: no connection could be opened, or the far end closed the
    connections at once (it does not keep idle connections open). ``errno`` as the cause's."""


class Interrupted(KeyboardInterrupt):
    """Raised by ``measure`` for Ctrl-C (or any KeyboardInterrupt), after every connection is
    closed; ``result`` holds what was known so far (``result.complete`` is False)."""

    def __init__(self, result: ProbeResult) -> None:
        super().__init__("interrupted")
        self.result = result


class _Run:
    def __init__(
        self,
        target: str,
        address: Address,
        settings: Settings,
        payload: bytes | None,
        progress: Callable[[Progress], None] | None,
        clock: Callable[[], float],
    ) -> None:
        self.target = target
        self.address = address
        self.settings = settings
        self.payload = payload
        self.progress = progress
        self.clock = clock
        self.plan = Plan(settings)
        self.connections: dict[int, Connection] = {}
        self.connecting: dict[int, float] = {}  # line -> when its connect started
        self.queued: deque[tuple[int, Role]] = deque()  # lines the plan opened, not yet connecting
        self.last_open = -math.inf
        self.selector = selectors.DefaultSelector()
        self.next_poll = 0.0

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> ProbeResult:
        try:
            self._loop()
        except KeyboardInterrupt:
            self._close_all()
            raise Interrupted(self.result(complete=False)) from None
        finally:
            self._close_all()
            self.selector.close()
        return self.result(complete=True)

    def result(self, complete: bool) -> ProbeResult:
        started = self.plan.started if self.plan.started is not None else self.clock()
        return build_result(
            self.target,
            self.plan.estimate(),
            self.settings.max,
            self.settings.precision,
            self.clock() - started,
            complete,
        )

    def _loop(self) -> None:
        while True:
            now = self.clock()
            step = self.plan.step(now)
            for line in step.close:
                self._close(line.id)
            if step.finished:
                return
            self.queued.extend((line.id, line.role) for line in step.open)
            self._open_queued(now)
            for line in step.probe:
                self.connections[line.id].arm(now, max(1, math.ceil(2 * self.plan.rtt)))
            timeout = self._timeout(step.wake, now)
            for key, mask in self.selector.select(timeout):
                self._event(key.data, mask)
            self._poll(self.clock())
            if self.progress is not None:
                self.progress(self.plan.progress(self.clock()))

    def _timeout(self, wake: float, now: float) -> float:
        armed = any(conn.armed_at is not None for conn in self.connections.values())
        limit = POLL_PROBE if armed or self.queued else POLL_LINES
        if self.connecting:
            limit = min(limit, min(self.connecting.values()) + CONNECT_TIMEOUT - now)
        payload_due = min((conn.payload_due for conn in self.connections.values()), default=math.inf)
        return max(0.0, min(wake - now, limit, payload_due - now))

    # -- connections ------------------------------------------------------------------------------
    def _open_queued(self, now: float) -> None:
        while self.queued and len(self.connecting) < CONNECTING_AT_ONCE and now - self.last_open >= OPEN_GAP:
            line, role = self.queued.popleft()
            self.last_open = now
            self._open(line, role, now)

    def _open(self, line: int, role: Role, now: float) -> None:
        with signals_deferred():  # the socket and its entry: both or neither
            conn = Connection(line, role, self.address)
            self.connections[line] = conn
        self.connecting[line] = now
        try:
            conn.start()
        except OSError as exc:
            self._failed(line, exc.errno or errno.EIO)
            return
        self.selector.register(conn.sock, selectors.EVENT_WRITE, conn)

    def _close(self, line: int) -> None:
        with signals_deferred():
            conn = self.connections.pop(line, None)
            self.connecting.pop(line, None)
            if conn is None:
                return
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(conn.sock)
            conn.close()

    def _close_all(self) -> None:
        with signals_deferred():
            for line in list(self.connections):
                self._close(line)

    def _failed(self, line: int, err: int) -> None:
        self.plan.connect_failed(line)
        self._close(line)
        if not any(other.opened is not None or not other.closed for other in self.plan.lines.values()):
            raise ProbeError(err, f"cannot connect to {self.address.text}: {os.strerror(err)}")

    def _event(self, conn: Connection, mask: int) -> None:
        now = self.clock()
        line = conn.line
        if line in self.connecting:
            err = conn.connect_error()
            del self.connecting[line]
            if err:
                self._failed(line, err)
                return
            try:
                info = conn.info()
            except OSError:  # gone in the same instant: its read below says how
                info = None
            if info is not None:
                self.plan.connected(line, max(self.plan.started or now, now - info.last_ack_recv))
                self.plan.rtt = max(self.plan.rtt, info.rtt)
            else:
                self.plan.connected(line, now)
            conn.established()
            if conn.role is Role.PAYLOAD:
                conn.payload_due = now + PAYLOAD_EVERY
            self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
            return
        received, gone = conn.read()
        if received:
            self.plan.received(line, now)
        if gone is not None:
            self._ended(conn, gone, now)

    def _ended(self, conn: Connection, gone: Gone, now: float) -> None:
        line = self.plan.lines[conn.line]
        try:
            info = conn.info()
        except OSError:
            info = None
        if info is not None:
            answered = conn.answered(now)
            if answered is not None:
                self.plan.answered(line.id, answered)
            if line.role is not Role.SILENT:
                self.plan.heard(line.id, now - info.last_ack_recv)
        if (
            gone.death != "silent"
            and conn.armed_at is None
            and line.opened is not None
            and now - line.opened < CLOSED_AT_ONCE
        ):
            raise ProbeError(
                gone.errno or errno.ECONNABORTED,
                f"{self.address.text} closed a connection {now - line.opened:.2f} s after it opened "
                f"({'a FIN' if gone.death == 'fin' else 'a reset'}): probe a service that keeps idle "
                "connections open (or run `ka probe --serve PORT` there), or use fewer --connections "
                "if it limits them",
            )
        self.plan.died(line.id, now, gone.death)
        self._close(line.id)

    def _poll(self, now: float) -> None:
        for conn in list(self.connections.values()):
            if conn.armed_at is not None:
                answered = conn.answered(now)
                if answered is not None:
                    self.plan.answered(conn.line, answered)
                    conn.disarm()
            if conn.role is Role.PAYLOAD and self.payload is not None and now >= conn.payload_due:
                conn.send(self.payload)
                self.plan.sent(conn.line, now)
                conn.payload_due = now + PAYLOAD_EVERY
        for line, started in list(self.connecting.items()):
            if now - started > CONNECT_TIMEOUT:
                del self.connecting[line]
                self._failed(line, errno.ETIMEDOUT)
        self._open_queued(now)
        if now < self.next_poll:
            return
        self.next_poll = now + POLL_LINES
        for conn in list(self.connections.values()):
            if conn.role is Role.SILENT or conn.line in self.connecting:
                continue
            info = conn.info()
            self.plan.heard(conn.line, now - info.last_ack_recv)
            if conn.role is Role.KEEPALIVE:
                self.plan.rtt = max(0.001, info.rtt)


Duration = Union[int, float, datetime.timedelta]


def _check_descriptors(connections: int) -> None:
    """ValueError unless this process may open ``connections`` more descriptors at once (its
    RLIMIT_NOFILE less those open, and one for the selector): said before any connection opens,
    not as EMFILE part way. Where the limit or the count cannot be read, nothing is checked."""
    use = descriptor_use()
    if use is None:
        return
    soft, in_use = use
    free = soft - in_use - 1
    if connections > free:
        raise ValueError(
            f"connections={connections} needs {connections} descriptors at once, and this process "
            f"may open {max(free, 0)} more (RLIMIT_NOFILE {soft}, {in_use} open): raise it (ulimit -n) "
            "or use fewer connections"
        )


def measure(
    target: str | tuple[str, int],
    *,
    max: Duration = 900,
    precision: Precision | str = "5s,5%",
    connections: int = 24,
    payload: bytes | str | None = None,
    progress: Callable[[Progress], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ProbeResult:
    """Measure how long the path to ``target`` keeps an idle TCP flow, how the flow dies, and
    whether keepalive probes keep it open; the policy it needs (Linux).

    ``target``: ``"HOST:PORT"``, ``"[IPV6]:PORT"`` or ``(host, port)``: any TCP service that keeps
    idle connections open (``ka probe --serve PORT`` is one). ``max``: the longest silence tested
    (seconds or a timedelta; at least 5). ``precision``: ``"5s,5%"`` (the default: within 5 s or
    5%, whichever is larger), or a ``Precision``. ``connections``: how many may be open at once
    (fewer: a coarser first wave, a longer run; more than the descriptor limit leaves free is a
    ValueError). ``payload``: bytes (or text, UTF-8) that one
    connection may send every second to tell whether an application heartbeat keeps the path open;
    None (the default) sends no payload at all. ``progress`` is called with a ``Progress`` after
    every step (about 4 to 50 times a second).

    Returns a ``ProbeResult``; raises ``Interrupted`` (a KeyboardInterrupt carrying the partial
    result) on Ctrl-C, ``ProbeError`` when the target cannot be probed, ValueError/TypeError for
    bad arguments before any connection is opened. Every connection is closed, with a reset,
    before this returns or raises. Elsewhere than Linux: NotImplementedError (the probe reads
    ``TCP_INFO`` and relies on Linux re-arming the keepalive timer when ``TCP_KEEPIDLE`` changes).
    """
    precise = precision if isinstance(precision, Precision) else Precision.parse(precision)
    longest = microseconds("max", max) / 1_000_000
    if isinstance(payload, str):
        payload = payload.encode()
    if payload is not None and (not isinstance(payload, bytes) or not payload):
        raise ValueError(f"payload must be non-empty bytes or text, or None, not {payload!r}")
    settings = Settings(longest, precise, connections, payload is not None)
    host, port = parse_target(target)
    if not sys.platform.startswith("linux"):
        raise NotImplementedError(
            "ka probe runs on Linux only: it reads TCP_INFO and re-arms keepalive timers"
        )
    _check_descriptors(connections)
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return _Run(shown, resolve(host, port), settings, payload, progress, clock).run()
