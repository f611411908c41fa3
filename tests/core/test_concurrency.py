"""apply_many and read_many from 8 threads over overlapping pools while other threads open and close
sockets: no crash, no hang, every input accounted for.

Descriptors opened and closed by the churn threads race with the bulk calls: by the time a call
reaches one, it may be closed (EBADF) or already reused by a new socket or pipe, so for those only
the accounting is checked, never a particular errno. The stable pool must come out applied.
"""

from __future__ import annotations

import importlib
import os
import random
import socket
import sys
import sysconfig
import threading
import time
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

import ka
from helpers import core_apply_many, core_read_many, kernel_values
from ka.bench.pool import LoopbackPool

if TYPE_CHECKING:
    from typing_extensions import Self

POLICY = ka.KeepAlive(idle=29, interval=4, count=3, user_timeout="auto")
EXPECTED = (1, 29, 4, 3, 41000)
WORKERS = 8
ROUNDS = 25
STABLE = 240
JOIN_TIMEOUT = 60.0


class Churn:
    """Threads that keep opening and closing sockets and pipes, publishing their fd numbers."""

    def __init__(self, threads: int = 2) -> None:
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.recent: list[int] = []
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(k,)) for k in range(threads)]

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        held: list[socket.socket | int] = []
        try:
            while not self.stop.is_set():
                kind = rng.randrange(3)
                if kind == 0:
                    item: socket.socket | int = socket.socket()
                elif kind == 1:
                    item = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                else:
                    r, w = os.pipe()
                    os.close(w)
                    item = r
                held.append(item)
                fd = item if isinstance(item, int) else item.fileno()
                with self.lock:
                    self.recent = [*self.recent[-15:], fd]
                if len(held) > 8:
                    old = held.pop(rng.randrange(len(held)))
                    if isinstance(old, int):
                        os.close(old)
                    else:
                        old.close()
                time.sleep(0.0005)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            for old in held:
                if isinstance(old, int):
                    os.close(old)
                else:
                    old.close()

    def sample(self) -> list[int]:
        with self.lock:
            return list(self.recent)

    def __enter__(self) -> Self:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(JOIN_TIMEOUT)


def _check_accounting(result: ka.BulkResult | ka.ReadResult, fds: list[int], stable_at: list[int]) -> None:
    n = len(fds)
    assert len(result) == n
    assert list(result.fds) == fds
    failed = [f.index for f in result.failed]
    assert len(failed) == len(set(failed)) == result.failed_count
    assert all(0 <= i < n for i in failed)
    for f in result.failed:
        assert f.errno > 0 and f.option is not ka.Option.NONE
    for i in stable_at:
        assert result.errnos[i] == 0, (i, fds[i], result.errnos[i])


def test_eight_threads_over_overlapping_pools_with_churn(core: ModuleType) -> None:
    errors: list[BaseException] = []
    calls = [0]
    failures = [0]
    with LoopbackPool(STABLE) as pool:
        stable = pool.sockets
        with Churn() as churn:

            def worker(k: int) -> None:
                rng = random.Random(k)
                try:
                    for _ in range(ROUNDS):
                        start = rng.randrange(STABLE)
                        picked = [stable[(start + j) % STABLE] for j in range(rng.randrange(20, 120))]
                        targets: list[socket.socket | int] = list(picked)
                        racing = churn.sample()
                        for fd in racing:
                            targets.insert(rng.randrange(len(targets) + 1), fd)
                        stable_at = [i for i, t in enumerate(targets) if isinstance(t, socket.socket)]
                        fds = [t if isinstance(t, int) else t.fileno() for t in targets]
                        threads = rng.randint(1, 4)
                        result: ka.BulkResult | ka.ReadResult
                        if rng.random() < 0.7:
                            result = core_apply_many(core, targets, POLICY, threads)
                            _check_accounting(result, fds, stable_at)
                        else:
                            result = core_read_many(core, targets, threads)
                            _check_accounting(result, fds, [])
                        calls[0] += 1
                        failures[0] += result.failed_count
                except BaseException as exc:
                    errors.append(exc)

            workers = [threading.Thread(target=worker, args=(k,)) for k in range(WORKERS)]
            for t in workers:
                t.start()
            deadline = time.monotonic() + JOIN_TIMEOUT
            for t in workers:
                t.join(max(0.1, deadline - time.monotonic()))
            hung = [t.name for t in workers if t.is_alive()]
        assert not hung, f"bulk calls did not return: {hung}"
        assert not churn.errors, churn.errors
        if errors:
            raise errors[0]
        assert calls[0] == WORKERS * ROUNDS
        assert failures[0] > 0, "no racing descriptor was ever reported: the race did not happen"
        # The race is over: every stable socket carries the policy, and one more call finds it so.
        core_apply_many(core, stable, POLICY).raise_for_failures()
        for s in stable:
            assert kernel_values(s) == EXPECTED
        assert core_read_many(core, stable, 4).mismatches(POLICY) == []


def _gil_disabled_build() -> bool:
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


@pytest.mark.skipif(
    not _gil_disabled_build(),
    reason="this CPython has a GIL; no free-threaded CPython was found on this machine (see docs/HAZARDS.md)",
)
def test_free_threaded_interpreter_keeps_the_gil_off() -> None:
    """The compiled core declares freethreading_compatible: importing it must not turn the GIL on."""
    importlib.import_module("ka._ka_c")
    assert not sys._is_gil_enabled()  # type: ignore[attr-defined]
