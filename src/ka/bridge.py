"""``ka.retrofit``: a policy for connections that may have been quiet a while, never dropping one.

macOS and the BSDs drop such a connection themselves when it gets a keepalive idle, without
sending a probe. Setting the idle re-arms the keepalive timer to fire ``idle`` seconds later (xnu
bsd/netinet/tcp_usrreq.c ``tcp_ctloutput`` TCP_KEEPALIVE; FreeBSD sys/netinet/tcp_usrreq.c
``tcp_default_ctloutput`` TCP_KEEPIDLE; NetBSD ``change_keepalive``), and when it fires the
kernel drops the connection if nothing was RECEIVED for idle + interval * count (xnu
tcp_timer.c ``tcp_timers`` TCPT_KEEP; FreeBSD tcp_timer.c ``tcp_timer_keep``), counting from the
last segment in (``t_rcvtime``). A connection quiet for interval * count seconds when the policy
lands is dropped ``idle`` later. Linux counts unanswered probes instead (``tcp_keepalive_timer``)
and Windows documents the same (TCP_KEEPCNT: "probes that will be sent before the connection is
terminated"): one step is safe there, and ``retrofit`` is ``apply_many``.

Where it is not, ``retrofit`` bridges each established TCP connection first: SO_KEEPALIVE on,
idle 1 s, interval 1 s and a count whose interval * count outlasts any quiet time the kernel can
count (``Bridge.spec``), so the timer fires within a second and, finding the connection quiet for
less than the bridge's span, sends a probe; the peer's ACK restarts the receive clock. After
``Bridge.wait`` seconds it reads each bridged socket back and applies the policy where the socket
still carries the bridge: a number the caller closed, or one now naming another socket, is left
alone (``Route.LOST``). Sockets in other states (listening, connecting, closed) and anything that
is not a TCP socket get the policy in one step, as ``apply_many`` gives it: a listener would pass
the bridge on to connections accepted during the wait, and FreeBSD turns an idle set on a
connecting socket into its connect timeout.

ka bridges only on request: it cannot tell a quiet connection from a fresh one (xnu exposes no
receive clock; FreeBSD's ``tcpi_last_data_recv`` counts microseconds in 32 bits and wraps every
71.6 minutes), and a bridge costs the caller a two-second wait. ``ka.apply``/``apply_many`` and
the server and client glue, which apply to fresh sockets, stay one step.

``retrofit`` and ``RetrofitResult`` are the face's (``ka.retrofit``, ``ka.RetrofitResult``); this
module's own public names (``__all__``) are what reads a result (``Route``), what a program with
its own event loop runs in two halves (``Retrofit``: ``ka.aio.retrofit`` is one), and the bridge
each platform uses (``bridge_for``, ``check_bridgeable``, ``Bridge``).
"""

from __future__ import annotations

import array
import enum
import errno
import time
from collections.abc import Iterable
from typing import NamedTuple

from ._borrow import borrowed_call
from ._impl import core
from ._options import HERE, IPPROTO_TCP, MAX_DETECTION_BY_PLATFORM, Option
from .bulk import apply_many, check_arguments, read_many
from .policy import KeepAlive, require_policy
from .protocol import AppliedColumns, Spec
from .results import BulkResult
from .targets import Backend, Targets
from .units import platform_name, platform_named

__all__ = ["BRIDGE_WAIT", "MIN_PROBE_SPAN", "Bridge", "Retrofit", "Route", "bridge_for", "check_bridgeable"]

#: Seconds between the bridge and the policy: the bridge's 1 s idle, plus xnu's keepalive timer
#: running on a 500 ms quantum (tcp_timer.h 222-233 IS_TIMER_HZ_500MS; tcp_timer.c 1936-1974
#: need_to_resched_timerlist), plus half a second to spare: the bridge's probe has left by then.
BRIDGE_WAIT = 2.0
#: The smallest interval * count (seconds) ``retrofit`` takes where it bridges. The bridge's first
#: probe leaves 1 s after it (at the earliest), so when the policy lands 2 s after the bridge the
#: last reply is at most 1 s old, and the policy's first expiry may come 500 ms late (xnu's
#: quantum): the kernel then finds the connection quiet for idle + 1.5 s at most, under its drop
#: threshold idle + interval * count for any span of 2 s or more, not for 1 s
#: (tests/adapters/test_retrofit_model.py walks the cases).
MIN_PROBE_SPAN = 2

# The option that reads a socket's TCP state (byte 0 of the answer): xnu tcp.h
# TCP_CONNECTION_INFO (tcpi_state); FreeBSD and NetBSD tcp.h TCP_INFO (tcpi_state).
STATE_OPTIONS = {"darwin": 0x106, "freebsd": 32, "netbsd": 9}
_INFO_SIZE = 512  # larger than any of those structures: the kernel copies what it has
# tcp_fsm.h, the same numbers on xnu, FreeBSD and NetBSD: ESTABLISHED .. FIN_WAIT_2 are the
# states whose keepalive timer a new idle re-arms and whose expiry can drop the connection.
TCPS_ESTABLISHED = 4
TCPS_FIN_WAIT_2 = 9


class Route(enum.IntEnum):
    """How ``ka.retrofit`` handled one input (``RetrofitResult.routes``)."""

    DIRECT = 0
    """One step, as ``apply_many``: this OS needs no bridge, or the input is not an established
    TCP connection (a listener, a connecting socket, UDP, a closed descriptor...)."""
    BRIDGED = 1
    """The bridge, the wait, then the policy."""
    BRIDGE_FAILED = 2
    """The bridge failed (its errno and option are reported) and the policy was applied at once."""
    LOST = 3
    """Bridged, but after the wait the descriptor no longer carried the bridge (closed, its number
    reused, or its options changed meanwhile): left alone, reported with the read's errno, or
    ESTALE and ``Option.NONE``."""


class Bridge(NamedTuple):
    """What ``ka.retrofit`` applies first on one platform, and when it applies the policy."""

    spec: Spec
    """The bridge's values as the shim takes them: enabled, idle 1 s, interval 1 s, count."""
    wait: float
    """Seconds from the bridge to the policy."""
    min_span: int
    """The smallest interval * count (seconds) of a policy it bridges to."""


def bridge_for(platform: str | None = None) -> Bridge | None:
    """The bridge ``ka.retrofit`` uses on ``platform`` (``"darwin"``/``"macos"``, ``"freebsd"``,
    ``"netbsd"``, ``"linux"``, ...; this system by default), None where one step is safe (Linux,
    Windows) or no idle can be set (OpenBSD).

    Its count makes idle + interval * count the most the kernel's 32-bit sum holds
    (``MAX_DETECTION_BY_PLATFORM``): a connection quiet for less than that (49.7 days on macOS,
    24.8 days on the BSDs) is probed, not dropped, when the bridge's timer fires.
    """
    name = HERE.name if platform is None else platform
    if isinstance(name, str) and name.lower().startswith("openbsd"):
        return None  # no per-socket keepalive times: nothing re-arms the timer
    maximum = MAX_DETECTION_BY_PLATFORM[platform_named(name)]
    if maximum is None:
        return None
    return Bridge(Spec(1, 1, 1, maximum - 1, -1), BRIDGE_WAIT, MIN_PROBE_SPAN)


def check_bridgeable(policy: KeepAlive, bridge: Bridge, platform: str | None = None) -> None:
    """Refuse a policy the bridge cannot hand over safely, before any system call: one that
    leaves idle, interval or count as they are (the bridge would stay in their place), or whose
    interval * count is below ``bridge.min_span``."""
    missing = [name for name in ("idle", "interval", "count") if getattr(policy, name) is None]
    if missing:
        raise ValueError(
            f"ka.retrofit needs a policy that sets idle, interval and count, not {policy!r} (it "
            f"leaves {', '.join(missing)} as is): the bridge sets all three, and a value left as "
            "it is would keep the bridge's"
        )
    span = (policy.interval or 0) * (policy.count or 0)
    if span < bridge.min_span:
        raise ValueError(
            f"{policy!r} has interval * count = {span} s, below the {bridge.min_span} s "
            f"ka.retrofit needs on {platform_name(platform_named(platform))}: the kernel drops a "
            "connection whose last reply is interval * count old when the policy's first probe is "
            f"due, and the bridge's last reply can be {bridge.min_span - 1} s old by then (raise "
            "interval or count)"
        )


def _states(fds: array.array[int], option: int) -> list[int | None]:
    """Each descriptor's TCP state (tcp_fsm.h), None where it cannot be read (no TCP socket)."""
    states: list[int | None] = []
    for fd in fds:
        if fd < 0:  # a closed socket object's -1: apply_many reports it
            states.append(None)
            continue
        try:
            info = borrowed_call(fd, lambda sock: sock.getsockopt(IPPROTO_TCP, option, _INFO_SIZE))
        except OSError:
            states.append(None)
            continue
        states.append(info[0] if info else None)
    return states


class RetrofitResult(BulkResult):
    """``ka.retrofit``'s outcome: a ``BulkResult`` (every input applied or in ``failed`` with its
    errno and option), plus ``routes`` (a ``Route`` per input, an array) and ``waited`` (seconds
    spent between the bridge and the policy; 0 where nothing was bridged)."""

    __slots__ = ("routes", "waited")

    routes: array.array[int]
    """How each input went: a ``Route`` value per input, in input order (an ``array('B')``)."""
    waited: float
    """Seconds between the bridge and the policy (0.0 where nothing was bridged)."""

    def __init__(self, columns: AppliedColumns, routes: array.array[int], waited: float) -> None:
        super().__init__(columns.fds, columns.errnos, columns.options, columns.failed)
        self.routes = routes
        self.waited = waited

    @property
    def bridged(self) -> int:
        """How many inputs got the policy through the bridge."""
        return sum(1 for route in self.routes if route == Route.BRIDGED)

    def __repr__(self) -> str:
        return (
            f"<RetrofitResult {len(self)} sockets: {self.applied} applied ({self.bridged} bridged), "
            f"{self.failed_count} failed, waited {self.waited:.1f} s>"
        )


def _subset(fds: array.array[int], indices: Iterable[int]) -> array.array[int]:
    return array.array(fds.typecode, [fds[i] for i in indices])


class Retrofit:
    """One ``ka.retrofit`` in two halves around its wait: ``start()``, then ``finish()`` at least
    ``wait`` seconds later (``ka.retrofit`` sleeps between them, ``ka.aio.retrofit`` awaits).

    Bad input (targets, policy, threads, backend, a policy the bridge cannot take) raises here,
    before any system call.
    """

    def __init__(
        self, targets: Targets, policy: KeepAlive, *, threads: int | None = None, backend: Backend = "auto"
    ) -> None:
        self.policy: KeepAlive = require_policy(policy)
        check_arguments(threads, backend)
        # SO_KEEPALIVE and the user timeout alone re-arm no timer: one step is safe for them.
        times = (self.policy.idle, self.policy.interval, self.policy.count)
        bridge = bridge_for() if self.policy.enabled and times != (None, None, None) else None
        if bridge is not None:
            check_bridgeable(self.policy, bridge)
            spec = bridge.spec
            self.bridge_policy: KeepAlive = KeepAlive(spec.idle, spec.interval, spec.count)
        self.bridge: Bridge | None = bridge
        self.threads: int | None = threads
        self.backend: Backend = backend
        self.fds: array.array[int] = core.collect_fds(targets)
        n = len(self.fds)
        self.errnos: array.array[int] = array.array("i", bytes(4 * n))
        self.options: array.array[int] = array.array("B", bytes(n))
        self.routes: array.array[int] = array.array("B", bytes(n))
        self.bridged: list[int] = []
        self.wait: float = 0.0
        self._started = 0.0

    def _apply(self, indices: list[int], policy: KeepAlive, route: Route) -> list[int]:
        """Apply ``policy`` to these inputs; record each one's outcome; the indices that failed."""
        if not indices:
            return []
        result = apply_many(_subset(self.fds, indices), policy, threads=self.threads, backend=self.backend)
        failed = []
        for k, i in enumerate(indices):
            self.routes[i] = route
            if result.errnos[k]:
                self.errnos[i] = result.errnos[k]
                self.options[i] = result.options[k]
                failed.append(i)
        return failed

    def start(self) -> float:
        """The policy where no bridge is needed, the bridge elsewhere; returns ``wait``: the
        seconds ``finish()`` must come after (0 when nothing was bridged)."""
        if self.bridge is None:  # one step is safe: apply_many itself, nothing more
            result = apply_many(self.fds, self.policy, threads=self.threads, backend=self.backend)
            self.errnos, self.options = result.errnos, result.options
            return 0.0
        option = STATE_OPTIONS.get(HERE.name, STATE_OPTIONS["freebsd"])
        states = _states(self.fds, option)
        bridge: list[int] = []
        direct: list[int] = []
        for i, state in enumerate(states):
            established = state is not None and TCPS_ESTABLISHED <= state <= TCPS_FIN_WAIT_2
            (bridge if established else direct).append(i)
        self._apply(direct, self.policy, Route.DIRECT)
        failed = self._apply(bridge, self.bridge_policy, Route.BRIDGED)
        if failed:
            # The bridge's errno and option stay reported; the policy replaces whatever part of
            # the bridge was set, so no socket keeps a half bridge.
            kept = {i: (self.errnos[i], self.options[i]) for i in failed}
            self._apply(failed, self.policy, Route.BRIDGE_FAILED)
            for i, (err, option_failed) in kept.items():
                self.errnos[i], self.options[i] = err, option_failed
        lost = set(failed)
        self.bridged = [i for i in bridge if i not in lost]
        self._started = time.monotonic()
        self.wait = self.bridge.wait if self.bridged else 0.0
        return self.wait

    def remaining(self) -> float:
        """Seconds still to wait before ``finish()``."""
        return max(0.0, self.wait - (time.monotonic() - self._started)) if self.bridged else 0.0

    def finish(self) -> RetrofitResult:
        """Read the bridged sockets back and apply the policy to those still carrying the bridge.
        A ``RuntimeError`` before ``wait`` seconds have passed since ``start()``: the bridge's probe
        may not have left yet, and the policy would then drop the quiet connections."""
        early = self.remaining()
        if early > 0:
            raise RuntimeError(f"Retrofit.finish() came {early:.3f} s before the bridge's wait was over")
        waited = time.monotonic() - self._started if self.bridged else 0.0
        if self.bridged:
            assert self.bridge is not None
            spec = self.bridge.spec
            read = read_many(_subset(self.fds, self.bridged), threads=self.threads)
            same = []
            for k, i in enumerate(self.bridged):
                if read.errnos[k]:
                    self.errnos[i], self.options[i] = read.errnos[k], read.options[k]
                    self.routes[i] = Route.LOST
                    continue
                # -1: a value this kernel cannot read back (NetBSD): SO_KEEPALIVE still vouches
                values = (read.idle[k], read.interval[k], read.count[k])
                carries = read.enabled[k] == 1 and all(
                    have in (-1, want) for have, want in zip(values, (spec.idle, spec.interval, spec.count))
                )
                if carries:
                    same.append(i)
                else:
                    self.errnos[i], self.options[i] = errno.ESTALE, Option.NONE
                    self.routes[i] = Route.LOST
            self._apply(same, self.policy, Route.BRIDGED)
        failed = sum(1 for err in self.errnos if err)
        columns = AppliedColumns(self.fds, self.errnos, self.options, failed)
        return RetrofitResult(columns, self.routes, waited)


def retrofit(
    targets: Targets, policy: KeepAlive, *, threads: int | None = None, backend: Backend = "auto"
) -> RetrofitResult:
    """Apply ``policy`` to connections that may already be established and quiet, without the
    kernel dropping any: ``apply_many`` where one step is safe (Linux, Windows), else a bridge
    first (macOS, the BSDs; see ``ka.bridge``), waiting ``BRIDGE_WAIT`` (2 s) between the two.

    Takes what ``apply_many`` takes. Every input ends applied or in ``result.failed`` with its
    errno and option, whichever step failed; ``result.routes[i]`` (a ``Route``) says which way it
    went. The wait blocks the calling thread (the GIL is released): in asyncio use
    ``await ka.aio.retrofit(...)``. Keep the sockets open until it returns: a socket closed
    meanwhile is left alone (``Route.LOST``), and so is whatever took its number.

    Where it bridges, the policy must set idle, interval and count, with interval * count of at
    least 2 s, else a ``ValueError`` before any system call; a policy that sets none of them, or
    turns keepalive off, re-arms no timer and is applied in one step. Interrupted during the wait
    (``KeyboardInterrupt``), the bridged sockets keep the bridge: probed every second, never
    dropped by it; call ``retrofit`` again.
    """
    run = Retrofit(targets, policy, threads=threads, backend=backend)
    if run.start():
        time.sleep(run.remaining())
    return run.finish()
