"""The core protocol: the shapes the face hands to a core (compiled or twin) and gets back.

- ``Spec``: a policy's five values as the shim takes them (``KeepAlive.spec``), or one socket's
  five values as a read gives them; -1 is "leave as is" in a policy and "unknown" in a read.
- ``AppliedColumns``: what ``core.apply_many`` returns, one array per column.
- ``ReadColumns``: what ``core.read_many`` returns, one array per column.

Both cores return these exact types; ``BulkResult`` and ``ReadResult`` are built from them.
"""

from __future__ import annotations

import array
from typing import NamedTuple

from ._options import Option

LEAVE = -1  # a value a policy leaves as it is; a value a read could not tell


class Spec(NamedTuple):
    """(enabled, idle s, interval s, count, user timeout ms): the shim's ``ka_policy``/``ka_values``."""

    enabled: int
    idle: int
    interval: int
    count: int  # type: ignore[assignment]  # shadows tuple.count, on purpose
    user_timeout_ms: int

    def steps(self) -> list[tuple[Option, int]]:
        """The (option, value) calls this policy spec makes, in the shim's order.

        SO_KEEPALIVE comes first (XNU arms the timer with the socket's idle only when SO_KEEPALIVE
        is already on); a disabled policy sets no timing values; -1 values are left out.
        """
        steps: list[tuple[Option, int]] = [(Option.KEEPALIVE, 1 if self.enabled else 0)]
        if self.enabled:
            steps += [
                (o, v)
                for o, v in (
                    (Option.IDLE, self.idle),
                    (Option.INTERVAL, self.interval),
                    (Option.COUNT, self.count),
                )
                if v >= 0
            ]
        if self.user_timeout_ms >= 0:
            steps.append((Option.USER_TIMEOUT, self.user_timeout_ms))
        return steps


UNREAD = Spec(LEAVE, LEAVE, LEAVE, LEAVE, LEAVE)


class AppliedColumns(NamedTuple):
    """``core.apply_many``'s result: ``errnos[i]`` is 0 where input ``i`` got the whole policy,
    else ``options[i]`` names the option that failed; ``failed`` counts the non-zero errnos."""

    fds: array.array[int]
    errnos: array.array[int]
    options: array.array[int]
    failed: int


class ReadColumns(NamedTuple):
    """``core.read_many``'s result: the ``AppliedColumns`` fields plus one column per ``Spec``
    field (-1 where the platform cannot tell or the read failed)."""

    fds: array.array[int]
    errnos: array.array[int]
    options: array.array[int]
    enabled: array.array[int]
    idle: array.array[int]
    interval: array.array[int]
    count: array.array[int]  # type: ignore[assignment]  # shadows tuple.count, on purpose
    user_timeout_ms: array.array[int]
    failed: int
