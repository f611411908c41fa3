"""What the bulk calls return: every input accounted for, in compact arrays."""

from __future__ import annotations

import array
from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol

from ._options import Option
from .errors import option_error, strerror
from .protocol import AppliedColumns, ReadColumns, Spec
from .units import detection_time


class Failure(NamedTuple):
    """One input of a bulk call that failed: where it was, its fd, the errno and the option."""

    index: int  # type: ignore[assignment]  # the field shadows tuple.index, on purpose
    fd: int
    errno: int
    option: Option

    @property
    def strerror(self) -> str:
        return strerror(self.errno)

    def error(self, action: str = "setting") -> OSError:
        """This failure as the OSError a single call would have raised."""
        return option_error(self.errno, self.fd, self.option, action)


def _failures(fds: array.array[int], errnos: array.array[int], options: array.array[int]) -> list[Failure]:
    return [Failure(i, fds[i], err, Option(options[i])) for i, err in enumerate(errnos) if err]


class _Accounted:
    """Shared by BulkResult and ReadResult: failures derived once from the errno column."""

    __slots__ = ("_failed", "_failed_count", "errnos", "fds", "options")

    fds: array.array[int]
    errnos: array.array[int]
    options: array.array[int]

    def __init__(
        self,
        fds: array.array[int],
        errnos: array.array[int],
        options: array.array[int],
        failed_count: int,
    ) -> None:
        self.fds = fds
        self.errnos = errnos
        self.options = options
        self._failed_count = failed_count
        self._failed: list[Failure] | None = None

    def __len__(self) -> int:
        return len(self.fds)

    @property
    def ok(self) -> bool:
        """True when no input failed."""
        return self._failed_count == 0

    @property
    def failed(self) -> list[Failure]:
        """Each failed input as (index, fd, errno, option), in input order."""
        if self._failed is None:
            self._failed = [] if self._failed_count == 0 else _failures(self.fds, self.errnos, self.options)
        return self._failed

    @property
    def failed_count(self) -> int:
        return self._failed_count

    def raise_for_failures(self) -> None:
        """Raise one BulkError listing every failure, if there was any."""
        if self._failed_count:
            raise BulkError(self)


class BulkError(OSError):
    """Some inputs of a bulk call failed; ``failures`` lists each one, ``result`` holds them all.

    ``errno`` is the first failure's errno; every failure keeps its own.
    """

    failures: list[Failure]
    result: _Accounted

    def __init__(self, result: _Accounted, *args: Any) -> None:
        failures = result.failed
        first = failures[0]
        shown = ", ".join(
            f"#{f.index} fd {f.fd}: {strerror(f.errno)} on {f.option.system_name}" for f in failures[:5]
        )
        more = f" and {len(failures) - 5} more" if len(failures) > 5 else ""
        super().__init__(
            first.errno,
            f"{len(failures)} of {len(result)} sockets failed ({shown}{more})",
        )
        self.failures = failures
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.result,))


class BulkResult(_Accounted):
    """The outcome of ``apply_many``: ``errnos[i] == 0`` where input ``i`` was applied.

    ``fds``, ``errnos`` and ``options`` are arrays (no Python object per socket); ``failed`` lists
    the failures; ``applied`` counts the rest. Every input is in exactly one of the two.
    """

    __slots__ = ()

    @property
    def applied(self) -> int:
        """How many inputs got the whole policy."""
        return len(self.fds) - self._failed_count

    @property
    def applied_indices(self) -> list[int]:
        """Indices of the inputs that got the whole policy."""
        return [i for i, err in enumerate(self.errnos) if not err]

    @classmethod
    def from_columns(cls, columns: AppliedColumns) -> BulkResult:
        """The result of a core's ``apply_many``."""
        return cls(columns.fds, columns.errnos, columns.options, columns.failed)

    def __repr__(self) -> str:
        return f"<BulkResult {len(self)} sockets: {self.applied} applied, {self._failed_count} failed>"


class KeepAliveSettings(NamedTuple):
    """One socket's keepalive values as the kernel reports them.

    ``idle``/``interval`` in seconds, ``count`` in probes, ``user_timeout`` in seconds (0.0: the
    system's behaviour; macOS TCP_RXT_CONNDROPTIME, Windows TCP_MAXRTMS/TCP_MAXRT). None means
    unknown: the platform cannot tell (Windows before 10 1709 cannot read back what
    SIO_KEEPALIVE_VALS set). ka never fills in a system default as the socket's value.
    """

    enabled: bool
    idle: int | None
    interval: int | None
    count: int | None  # type: ignore[assignment]  # shadows tuple.count, on purpose
    user_timeout: float | None

    @property
    def detection_time(self) -> float | None:
        """Seconds of silence before the kernel drops the connection, if keepalive is on: idle +
        interval * count, or with a user timeout the first probe tick at or past it."""
        if not self.enabled or self.idle is None or self.interval is None or self.count is None:
            return None
        return detection_time(self.idle, self.interval, self.count, self.user_timeout)

    def matches(self, policy: HasSpec) -> bool:
        """Whether this socket carries every value the policy sets."""
        have = self.spec
        return all(getattr(have, option.field) == want for option, want in policy.spec.steps())

    @property
    def spec(self) -> Spec:
        """These values in the core's units (-1 where unknown): what ``settings_of`` takes."""
        ut = self.user_timeout
        return Spec(
            int(self.enabled),
            -1 if self.idle is None else self.idle,
            -1 if self.interval is None else self.interval,
            -1 if self.count is None else self.count,
            -1 if ut is None else round(ut * 1000),
        )


class HasSpec(Protocol):
    """A policy, as far as checking a socket against it goes (``KeepAlive``)."""

    @property
    def spec(self) -> Spec: ...


def settings_of(values: Spec) -> KeepAliveSettings:
    """What ``ka.read`` returns for the values one read gave: None where the OS cannot tell (-1)."""
    enabled, idle, interval, count, ut = values
    return KeepAliveSettings(
        bool(enabled),
        idle if idle > 0 else None,
        interval if interval > 0 else None,
        count if count > 0 else None,
        ut / 1000 if ut >= 0 else None,
    )


class ReadResult(_Accounted):
    """The outcome of ``read_many``, one column (an array) per field.

    ``enabled`` (0/1), ``idle``, ``interval``, ``count`` (seconds, probes) and ``user_timeout_ms``;
    -1 where the platform cannot tell or the read failed (see ``errnos``/``failed``).
    ``result[i]`` is one socket's ``KeepAliveSettings``.
    """

    __slots__ = ("count", "enabled", "idle", "interval", "user_timeout_ms")

    def __init__(
        self,
        fds: array.array[int],
        errnos: array.array[int],
        options: array.array[int],
        enabled: array.array[int],
        idle: array.array[int],
        interval: array.array[int],
        count: array.array[int],
        user_timeout_ms: array.array[int],
        failed_count: int,
    ) -> None:
        super().__init__(fds, errnos, options, failed_count)
        self.enabled: array.array[int] = enabled
        self.idle: array.array[int] = idle
        self.interval: array.array[int] = interval
        self.count: array.array[int] = count
        self.user_timeout_ms: array.array[int] = user_timeout_ms

    def __getitem__(self, index: int) -> KeepAliveSettings:
        if self.errnos[index]:
            raise option_error(self.errnos[index], self.fds[index], self.options[index], "reading")
        return settings_of(
            Spec(
                self.enabled[index],
                self.idle[index],
                self.interval[index],
                self.count[index],
                self.user_timeout_ms[index],
            )
        )

    def __iter__(self) -> Iterator[KeepAliveSettings | None]:
        """Each socket's settings, or None where its read failed."""
        for i in range(len(self)):
            yield None if self.errnos[i] else self[i]

    @classmethod
    def from_columns(cls, c: ReadColumns) -> ReadResult:
        """The result of a core's ``read_many``."""
        return cls(
            c.fds, c.errnos, c.options, c.enabled, c.idle, c.interval, c.count, c.user_timeout_ms, c.failed
        )

    def mismatches(self, policy: HasSpec) -> list[int]:
        """Indices of the sockets that do not carry the policy (failed reads included)."""
        checks = [(getattr(self, option.field), want) for option, want in policy.spec.steps()]
        return [
            i for i in range(len(self)) if self.errnos[i] or any(column[i] != want for column, want in checks)
        ]

    def __repr__(self) -> str:
        n, failed = len(self), self._failed_count
        return f"<ReadResult {n} sockets: {n - failed} read, {failed} failed>"
