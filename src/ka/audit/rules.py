"""The rules ``ka audit`` checks each connection against, and what a broken one reports.

Every rule looks at one connection's keepalive values as the kernel holds them
(``ka.KeepAliveSettings``) and says what the connection lacks, or None when it passes. Durations
are seconds; detection times count the user timeout by Linux's rule (``ka.live.dead_peer_after``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Protocol

from ..live import dead_peer_after
from ..policy import KeepAlive
from ..results import KeepAliveSettings


def _s(seconds: float) -> str:
    return f"{seconds:g} s"


class Rule(Protocol):
    """One check: ``name`` (as reports and metrics label it), ``description`` (what it demands)."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    def lacks(self, settings: KeepAliveSettings) -> str | None:
        """What a connection with these values lacks to pass, in words; None when it passes."""
        ...


@dataclasses.dataclass(frozen=True)
class AtLeastPolicy:
    """Each connection carries at least ``policy``: it finds a dead peer at least as early, field
    by field. Precisely, for every field the policy sets:

    - keepalive on (``SO_KEEPALIVE``), always: a policy that turns it off asks for nothing;
    - idle <= the policy's idle, interval <= its interval, count <= its count;
    - a user timeout: where the policy's is positive, the connection's is set (not 0) and at most
      the policy's; a policy with user timeout 0 or none asks for nothing there.

    Fields the policy leaves out (``idle=60`` alone) are not checked. Shorter or fewer is "at
    least": it finds a dead peer sooner. ``ka apply --dry-run`` shows exact differences.
    """

    policy: KeepAlive
    name: str = "policy"

    def __post_init__(self) -> None:
        if not self.policy.enabled:
            raise ValueError(
                f"policy {self.policy} turns keepalive off, so no connection can carry less: give a "
                "policy that turns it on (idle=60 interval=10 count=5, within=60s)"
            )

    @property
    def description(self) -> str:
        return f"at least {self.policy}"

    def lacks(self, settings: KeepAliveSettings) -> str | None:
        missing = [] if settings.enabled else ["keepalive on"]
        for field in ("idle", "interval", "count"):
            want = getattr(self.policy, field)
            have = getattr(settings, field)
            if want is not None and (have is None or have > want):
                missing.append(f"{field} <= {want}")
        want_ut = self.policy.user_timeout
        if want_ut and (not settings.user_timeout or settings.user_timeout > want_ut):
            missing.append(f"user timeout <= {want_ut:g} s")
        return ", ".join(missing) or None


@dataclasses.dataclass(frozen=True)
class MaxDetection:
    """A silent dead peer is found within ``seconds``: keepalive on and ``dead_peer_after`` (idle +
    interval x count, or with a user timeout the first probe tick at or past it) <= seconds."""

    seconds: float
    name: str = "max-detection"

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise ValueError(f"max detection {self.seconds!r}: expected a positive number of seconds")

    @property
    def description(self) -> str:
        return f"a dead peer found within {_s(self.seconds)}"

    def lacks(self, settings: KeepAliveSettings) -> str | None:
        after = dead_peer_after(settings)
        if after is None:
            return f"keepalive on (a dead peer within {_s(self.seconds)})"
        if after > self.seconds:
            return f"a dead peer within {_s(self.seconds)} (found after {_s(after)})"
        return None


def path_margin(idle_timeout: float) -> int:
    """Seconds kept between a probe and the path's idle timeout M: max(2, ceil(M / 10)), the
    margin ``KeepAlive.for_middlebox`` leaves for timer slack and transit."""
    return max(2, math.ceil(idle_timeout / 10))


@dataclasses.dataclass(frozen=True)
class PathTimeout:
    """The first probe leaves before a middlebox forgets the idle flow: keepalive on and idle <=
    M - margin, M the path's idle timeout (whole seconds), margin ``path_margin(M)``: a connection
    with ``KeepAlive.for_middlebox(M)`` passes, one second more idle does not. ``source``: where
    M came from (a ``ka probe --json`` file, or the command line)."""

    idle_timeout: float
    source: str = "command line"
    name: str = "path-timeout"

    def __post_init__(self) -> None:
        if not (self.idle_timeout >= 3 and math.isfinite(self.idle_timeout)):
            raise ValueError(
                f"path idle timeout {self.idle_timeout!r}: expected at least 3 seconds, a finite "
                "number (a probe before the timeout and a margin)"
            )

    @property
    def limit(self) -> int:
        """The longest idle that passes, in seconds."""
        whole = math.floor(self.idle_timeout)
        return whole - path_margin(whole)

    @property
    def description(self) -> str:
        return (
            f"idle <= {self.limit} s, below the path's idle timeout of {_s(self.idle_timeout)} "
            f"({self.source}) by a margin of {path_margin(math.floor(self.idle_timeout))} s"
        )

    def lacks(self, settings: KeepAliveSettings) -> str | None:
        why = f"(the path forgets idle flows after {_s(self.idle_timeout)})"
        if not settings.enabled:
            return f"keepalive on with idle <= {self.limit} s {why}"
        if settings.idle is None or settings.idle > self.limit:
            return f"idle <= {self.limit} s {why}"
        return None


@dataclasses.dataclass(frozen=True)
class RequireUserTimeout:
    """A user timeout is set (``TCP_USER_TIMEOUT`` not 0): without one, a peer that vanishes while
    data is unacknowledged is found only by retransmission timeouts (``tcp_retries2``, about 15
    minutes), since keepalive probes wait for the send queue to drain."""

    name: str = "require-user-timeout"

    @property
    def description(self) -> str:
        return "a user timeout (TCP_USER_TIMEOUT) is set"

    def lacks(self, settings: KeepAliveSettings) -> str | None:
        return None if settings.user_timeout else "a user timeout (TCP_USER_TIMEOUT)"


def probe_result(path: str | Path) -> PathTimeout:
    """The ``path-timeout`` rule from a ``ka probe --json`` result file (its ``idle_timeout``).

    ValueError naming the file when it cannot be read, is not the probe's JSON, or found no idle
    timeout (``null``: none below the probe's ``max``, so there is nothing to check against).
    """
    try:
        data: Any = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"--path-timeout {path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise ValueError(f"--path-timeout {path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or "idle_timeout" not in data:
        raise ValueError(f"--path-timeout {path}: expected a `ka probe --json` result with an idle_timeout")
    timeout = data["idle_timeout"]
    target = data.get("target") or "the probed path"
    if timeout is None:
        raise ValueError(
            f"--path-timeout {path}: the probe of {target} found no idle timeout below its max of "
            f"{data.get('max')} s, so there is none to check against"
        )
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ValueError(f"--path-timeout {path}: idle_timeout {timeout!r} is not a number of seconds")
    try:
        return PathTimeout(float(timeout), f"probed on {target}, {Path(path).name}")
    except ValueError as exc:
        raise ValueError(f"--path-timeout {path}: {exc}") from None
