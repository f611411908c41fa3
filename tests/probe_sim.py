"""A simulated middlebox and runner that drive ``ka.probe.plan.Plan`` in virtual time.

The box forgets a flow ``timeout`` seconds after its last packet (``refresh=True``: keepalive
probes and their answers count) or after its last payload (``refresh=False``: only the handshake
and payload count). A forgotten flow then goes ``silent`` (packets dropped), answers the next
packet with a ``reset``, or, for boxes that act on their own timer, sends a ``fin`` (a proxy) or
a ``timer-reset`` at the timeout itself. The runner mimics ``ka.probe.run``: a silent test probe
is given up after three probes a second apart, keepalive lines probe every second and are read
four times a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ka.probe.plan import KEEPALIVE_EVERY, PAYLOAD_EVERY, Estimate, Line, Plan, Role, Settings

GIVE_UP = 3.0  # seconds from a test probe to the kernel's abort (3 probes, 1 s apart)
POLL = 0.25


@dataclass
class Box:
    timeout: float | None  # None: an open path
    refresh: bool
    death: str  # "silent", "reset", "fin", "timer-reset"
    rtt: float = 0.002

    def forgets_at(self, flow: Flow) -> float:
        if self.timeout is None:
            return math.inf
        return (flow.last_packet if self.refresh else flow.last_payload) + self.timeout

    @property
    def acts_on_timer(self) -> bool:
        return self.death in ("fin", "timer-reset")


@dataclass
class Flow:
    line: Line
    last_packet: float
    last_payload: float
    next_keepalive: float = math.inf
    next_payload: float = math.inf
    test_probe: float | None = None
    gone: bool = False


@dataclass
class Outcome:
    estimate: Estimate
    elapsed: float
    plan: Plan
    events: list[str] = field(default_factory=list)


def simulate(box: Box, settings: Settings, dt: float = 0.05) -> Outcome:
    plan = Plan(settings)
    plan.rtt = box.rtt
    flows: dict[int, Flow] = {}
    now = 0.0
    next_poll = 0.0
    events: list[str] = []

    def kill(flow: Flow, at: float, how: str) -> None:
        flow.gone = True
        plan.died(flow.line.id, at, how)  # type: ignore[arg-type]
        events.append(f"{at:.2f} line {flow.line.id} ({flow.line.role.value}) died: {how}")

    while True:
        # test probes in flight: decided when armed (the answer or the give-up time)
        for flow in flows.values():
            if flow.gone or flow.test_probe is None:
                continue
            sent = flow.test_probe
            if sent < box.forgets_at(flow):
                if now >= sent + box.rtt:
                    flow.last_packet = sent
                    flow.test_probe = None
                    plan.answered(flow.line.id, sent + box.rtt)
            elif box.death == "reset" and now >= sent + box.rtt:
                kill(flow, sent + box.rtt, "reset")
            elif box.death == "silent" and now >= sent + GIVE_UP:
                kill(flow, sent + GIVE_UP, "silent")
        # the box acting on its own timer
        for flow in flows.values():
            if not flow.gone and box.acts_on_timer and now >= box.forgets_at(flow):
                kill(flow, box.forgets_at(flow) + box.rtt / 2, "fin" if box.death == "fin" else "reset")
        # keepalive and payload lines, each packet at its own time
        for flow in flows.values():
            while not flow.gone and min(flow.next_keepalive, flow.next_payload) <= now:
                keepalive = flow.next_keepalive <= flow.next_payload
                at = flow.next_keepalive if keepalive else flow.next_payload
                if at >= box.forgets_at(flow):
                    if box.death == "reset":
                        kill(flow, at + box.rtt, "reset")
                    elif not box.acts_on_timer:
                        kill(flow, at + GIVE_UP, "silent")
                    break
                flow.last_packet = at
                if keepalive:
                    flow.next_keepalive = at + box.rtt + KEEPALIVE_EVERY
                else:
                    flow.last_payload = at
                    plan.sent(flow.line.id, at)
                    flow.next_payload = at + PAYLOAD_EVERY
                plan.heard(flow.line.id, at + box.rtt)
        if now >= next_poll:
            next_poll = now + POLL
        if True:
            step = plan.step(now)
            for line in step.open:
                at = now + 0.001
                plan.connected(line.id, at)
                flow = Flow(line, at, at)
                if line.role is Role.KEEPALIVE:
                    flow.next_keepalive = at + KEEPALIVE_EVERY
                if line.role is Role.PAYLOAD:
                    flow.next_payload = at + PAYLOAD_EVERY
                flows[line.id] = flow
            for line in step.probe:
                flows[line.id].test_probe = now
            for line in step.close:
                if line.id in flows:
                    flows[line.id].gone = True
            if step.finished:
                return Outcome(plan.estimate(), now, plan, events)
        now = round(now + dt, 6)
