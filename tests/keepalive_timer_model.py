"""A MODEL of the keepalive timer of two kernels (not the kernels): xnu (macOS) and FreeBSD.

Written from their source, one rule per line of theirs, to replay the exact setsockopt sequences
ka's shim issues (captured by the recording stand-in, tests/standin) against one established TCP
connection whose peer either answers every probe after a round trip or never answers again.
Sources read (quoted in docs/platforms/macos.md and bsd.md):

xnu-11417.101.15 (apple-oss-distributions/xnu)
  bsd/netinet/tcp_usrreq.c 2442-2459  TCP_KEEPALIVE: t_keepidle = s * 1000; when the connection
                                      has been established, TCPT_KEEP = now + TCP_CONN_KEEPIDLE
  bsd/netinet/tcp_usrreq.c 2480-2515  TCP_KEEPINTVL, TCP_KEEPCNT: stored; no timer (but FIN_WAIT_2)
  bsd/kern/uipc_socket.c 4936-4958    SO_KEEPALIVE: a flag in so_options, nothing more (tcp_ctloutput
                                      2292-2304 refuses the SOL_SOCKET pass-down)
  bsd/netinet/tcp_timer.h 302-313     TCP_CONN_KEEPIDLE = t_keepidle if set and SO_KEEPALIVE is on,
                                      else tcp_keepidle; MAXIDLE = KEEPCNT * KEEPINTVL (uint32, ms)
  bsd/netinet/tcp_timer.c 1039        idle_time = tcp_now - t_rcvtime
  bsd/netinet/tcp_timer.c 1479-1530   TCPT_KEEP expiry: SO_KEEPALIVE on and idle_time >= KEEPIDLE +
                                      MAXIDLE: drop; else send a probe, TCPT_KEEP = now + KEEPINTVL;
                                      SO_KEEPALIVE off: TCPT_KEEP = now + KEEPIDLE
  bsd/netinet/tcp_timer.c 537-540     timers compare as int32: an offset >= 2^31 ms has expired
  bsd/netinet/tcp_timer.h 222-233     TCPT_KEEP is a slow timer (500 ms quantum): it may fire late
  bsd/netinet/tcp_input.c 3083-3090   every segment in: t_rcvtime = now; tcp_keepalive_reset
  bsd/netinet/tcp_input.c 908-914     tcp_keepalive_reset: TCPT_KEEP = now + TCP_CONN_KEEPIDLE
FreeBSD (main, 14.x timer code: sys/netinet/tcp_timer.c with tcp_timersw)
  tcp_usrreq.c tcp_default_ctloutput  TCP_KEEPIDLE: t_keepidle = s * hz; when LISTEN < state <=
                                      CLOSING: TT_KEEP = now + TP_KEEPIDLE ("XXX: better check
                                      current remaining timeout"); TCP_KEEPINTVL/TCP_KEEPCNT: stored
  tcp_timer.h TP_KEEPIDLE..MAXIDLE    t_keep* if set, else the sysctl; MAXIDLE = CNT * INTVL (u_int)
  tcp_timer.c tcp_timer_keep          idletime < TP_KEEPIDLE: re-arm for the rest; then, with
                                      SO_KEEPALIVE or tcp_always_keepalive (1 by default):
                                      ticks - t_rcvtime >= TP_KEEPIDLE + TP_MAXIDLE: drop; else
                                      probe, TT_KEEP = now + TP_KEEPINTVL
  tcp_input.c tcp_do_segment          every segment in: t_rcvtime = ticks (the keep callout is not
                                      reset per segment: tcp_timer_keep's comment)

Times are milliseconds (xnu's tcp_now unit; FreeBSD ticks at kern.hz 1000). ``lateness`` makes
an expiry fire that much after its deadline (xnu's 500 ms quantum at worst): one figure for every
arming of the timer, or one per arming in turn (the last one repeats).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

XNU = "xnu"
FREEBSD = "freebsd"
KERNELS = (XNU, FREEBSD)
STANDIN_OS = {XNU: "darwin", FREEBSD: "freebsd"}  # the stand-in that compiles ka's shim for each

U32 = 0xFFFFFFFF
SOL_SOCKET, SO_KEEPALIVE, IPPROTO_TCP = 0xFFFF, 8, 6
OPTIONS = {  # (idle, interval, count) option numbers: netinet/tcp.h
    XNU: (0x10, 0x101, 0x102),
    FREEBSD: (256, 512, 1024),
}
# xnu tcp_timer.h TCPTV_KEEP_IDLE / TCPTV_KEEPINTVL / TCPTV_KEEPCNT; FreeBSD's sysctl defaults
DEFAULT_IDLE_MS, DEFAULT_INTERVAL_MS, DEFAULT_COUNT = 7_200_000, 75_000, 8
HZ = 1000  # FreeBSD kern.hz: ticks are milliseconds
TCPS_ESTABLISHED = 4

Call = tuple[Any, ...]


class Step(NamedTuple):
    """Calls ka's shim made at one moment: ``at`` ms after the first step."""

    at: int
    calls: list[Call]


@dataclass
class Outcome:
    """What happened to the connection: the probes sent, and when it was dropped (None: never)."""

    probes: list[int] = field(default_factory=list)
    dropped_at: int | None = None

    @property
    def dropped(self) -> bool:
        return self.dropped_at is not None

    @property
    def probes_before_drop(self) -> int:
        return len(self.probes)


class ModelConnection:
    """One established connection's keepalive state in one kernel (the model, not the kernel).

    ``peer_alive``: the peer ACKs each probe ``rtt`` ms after it leaves; otherwise it is dead and
    never sends anything. The last segment came in at ``-quiet`` ms; ``apply`` happens at 0.
    """

    def __init__(
        self,
        kernel: str,
        *,
        quiet: int,
        peer_alive: bool,
        rtt: int = 1,
        lateness: int | Sequence[int] = 0,
    ) -> None:
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, not {kernel!r}")
        self.kernel = kernel
        self.peer_alive = peer_alive
        self.rtt = rtt
        self._lateness = [lateness] if isinstance(lateness, int) else list(lateness)
        self.now = -quiet
        self.rcvtime = -quiet  # t_rcvtime: the last segment received
        self.so_keepalive = False
        self.keepidle = self.keepintvl = self.keepcnt = 0  # 0: the system default
        self.outcome = Outcome()
        self._events: list[tuple[int, int, str, Any]] = []
        self._seq = itertools.count()
        self._timer_generation = 0
        # The segment at -quiet armed the timer: xnu tcp_keepalive_reset; FreeBSD armed TT_KEEP at
        # establishment (quiet stays below the 2 h default here, so no default probe intervenes).
        self._arm(self._keepidle())

    # -- the kernel's values ---------------------------------------------------------------------
    def _keepidle(self) -> int:
        if self.kernel == XNU:  # TCP_CONN_KEEPIDLE: the socket's own only while SO_KEEPALIVE is on
            return self.keepidle if self.keepidle and self.so_keepalive else DEFAULT_IDLE_MS
        return self.keepidle or DEFAULT_IDLE_MS  # TP_KEEPIDLE

    def _keepintvl(self) -> int:
        return self.keepintvl or DEFAULT_INTERVAL_MS

    def _maxidle(self) -> int:
        return ((self.keepcnt or DEFAULT_COUNT) * self._keepintvl()) & U32

    # -- events ------------------------------------------------------------------------------------
    def _push(self, when: int, kind: str, payload: Any = None) -> None:
        heapq.heappush(self._events, (when, next(self._seq), kind, payload))

    def _arm(self, offset: int) -> None:
        """TCPT_KEEP / TT_KEEP = now + offset; a re-arm replaces the pending expiry."""
        self._timer_generation += 1
        if self.kernel == XNU and offset >= 2**31:
            offset = 0  # timer_diff compares as int32: this offset has already expired
        late = self._lateness[min(self._timer_generation - 1, len(self._lateness) - 1)]
        self._push(self.now + offset + late, "expire", self._timer_generation)

    def setsockopt(self, level: int, name: int, value: int) -> None:
        idle_opt, intvl_opt, cnt_opt = OPTIONS[self.kernel]
        unit = 1000 if self.kernel == XNU else HZ  # xnu TCP_RETRANSHZ; FreeBSD hz
        if (level, name) == (SOL_SOCKET, SO_KEEPALIVE):
            self.so_keepalive = bool(value)  # a flag only, on both kernels
        elif (level, name) == (IPPROTO_TCP, idle_opt):
            self.keepidle = value * unit
            self._arm(self._keepidle())  # established: the timer restarts from now, quiet or not
        elif (level, name) == (IPPROTO_TCP, intvl_opt):
            self.keepintvl = value * unit
        elif (level, name) == (IPPROTO_TCP, cnt_opt):
            self.keepcnt = value
        # anything else (xnu TCP_RXT_CONNDROPTIME) does not touch the keepalive timer

    def _receive(self) -> None:
        self.rcvtime = self.now
        if self.kernel == XNU:
            self._arm(self._keepidle())  # tcp_keepalive_reset

    def _expire(self) -> None:
        idle = (self.now - self.rcvtime) & U32
        if self.kernel == FREEBSD and idle < self._keepidle():
            self._arm(self._keepidle() - idle)  # not idle long enough yet: re-arm for the rest
            return
        enabled = self.so_keepalive or self.kernel == FREEBSD  # FreeBSD tcp_always_keepalive = 1
        if not enabled:
            self._arm(self._keepidle())
            return
        if idle >= (self._keepidle() + self._maxidle()) & U32:
            self.outcome.dropped_at = self.now  # ETIMEDOUT, RST to the peer
            return
        self.outcome.probes.append(self.now)  # seq snd_una - 1: the peer must answer
        if self.peer_alive:
            self._push(self.now + self.rtt, "receive")
        self._arm(self._keepintvl())

    def run(self, steps: Sequence[Step], until: int) -> Outcome:
        """Replay ``steps`` (the calls ka's shim made, ("set", level, option, value) and ("get",
        level, option) tuples, ``at`` ms after the first step) and run the timers to ``until``."""
        for when, calls in steps:
            self._push(when, "calls", calls)
        while self._events and self.outcome.dropped_at is None:
            when, _, kind, payload = heapq.heappop(self._events)
            if when > until:
                break
            self.now = when
            if kind == "calls":
                for call in payload:
                    if call[0] == "set":
                        self.setsockopt(*call[1:4])
                    elif call[0] != "get":  # reads change nothing
                        raise ValueError(f"the model takes set and get calls, not {call!r}")
            elif kind == "receive":
                self._receive()
            elif kind == "expire" and payload == self._timer_generation:
                self._expire()
        return self.outcome


# -- driving the model with the calls ka's shim makes (the recording stand-in) ---------------------


def sequences(lib: Any, policy: Any, bridge: Any) -> tuple[list[Step], list[Step]]:
    """Today's sequence and ka.retrofit's, as the stand-in ``lib`` records them for one OS.

    Today: one ``ka_apply_one`` of ``policy`` (``ka.apply``, ``apply_many``). ka.retrofit: one of
    ``bridge.spec``, then ``bridge.wait`` later one ``ka_read_one`` (the read-back) and one of
    ``policy`` (``ka.bridge.Retrofit.start``/``finish``)."""
    from standin_build import c_apply, c_read

    today = [Step(0, c_apply(lib, policy.spec)[0])]
    later = int(bridge.wait * 1000)
    fixed = [
        Step(0, c_apply(lib, bridge.spec)[0]),
        Step(later, c_read(lib)[0] + c_apply(lib, policy.spec)[0]),
    ]
    return today, fixed


def table(libs: dict[str, Any]) -> str:
    """The markdown table of the closing note: quiet time x policy, dropped today / with the fix,
    for a peer answering after 1 ms, every expiry at its worst lateness."""
    import ka
    from ka.bridge import bridge_for

    policies = [
        ka.KeepAlive(2, 1, 2),
        ka.KeepAlive(5, 2, 3),
        ka.KeepAlive(60, 10, 5),
        ka.KeepAlive(7200, 75, 8),
    ]
    factors = [0, 0.5, 0.99, 1, 2, 5, 10]
    lines = []
    for kernel in KERNELS:
        os_name = STANDIN_OS[kernel]
        lines += [
            "",
            f"{kernel} (expiries {500 if kernel == XNU else 1} ms late): dropped today / with the fix",
            "",
            "| quiet time | " + " | ".join(str(p) for p in policies) + " |",
            "| --- |" + " --- |" * len(policies),
        ]
        for factor in factors:
            cells = []
            for policy in policies:
                idle, interval, count = policy.spec[1:4]
                span = interval * count * 1000
                today, fixed = sequences(libs[os_name], policy, bridge_for(os_name))
                late = 500 if kernel == XNU else 1
                until = 2000 + idle * 1000 + 3 * span + 10_000
                quiet = int(factor * span)
                out = [
                    ModelConnection(kernel, quiet=quiet, peer_alive=True, lateness=late).run(steps, until)
                    for steps in (today, fixed)
                ]
                cells.append(" / ".join("dropped" if o.dropped else "alive" for o in out))
            lines.append(f"| {factor:g} x interval x count | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from standin_build import build_all

    with tempfile.TemporaryDirectory() as out:
        print(table(build_all(Path(out))))
