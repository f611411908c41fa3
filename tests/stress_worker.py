"""The stress run behind tests/core/test_stress.py, in its own interpreter so a crash is a result.

Several threads call apply_many/read_many on one shared list while other threads mutate it
(clear, refill, shuffle, slice assignment), with sys.setswitchinterval(1e-6) so the GIL changes
hands between almost every bytecode, and a timer signal whose handler raises now and then.
Entries are ints, socket objects, asyncio TransportSocket wrappers (a Python-level fileno())
and objects whose fileno() mutates the list itself. Every result is checked entry by entry:
an fd this run owns, with the errno its kind must give. Prints one JSON line of figures.

Usage: python stress_worker.py SECONDS CALLERS MUTATORS
       python stress_worker.py ownership SECONDS

The ``ownership`` run (issue 19): callers on one and two threads (io_uring where the compiled
core can use it) over descriptor numbers that another thread closes and reopens as other kinds
of file under them; a "daemonizer" that closes every descriptor the program does not know of and
puts a canary socket on its number, as python-daemon's closerange does; and forks racing the
calls, each child making its own calls under a 10 s alarm. Figures: calls, forks, hangs (children
killed by the alarm), foreign descriptors touched (closed, replaced or given keepalive by ka:
every descriptor ka was never given), and descriptors ka held between calls.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from asyncio.trsock import TransportSocket
from collections.abc import Callable
from typing import Any

import ka


class Interrupted(BaseException):
    """What the timer's handler raises in whichever call it lands."""


ENOUGH, ENOUGH_WITHIN = 1500, 10  # results and entries checked (test_stress asks for > 1000)


def main() -> None:
    seconds, n_callers, n_mutators = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    policy = ka.KeepAlive(idle=41, interval=9, count=5)
    tcp = [socket.socket() for _ in range(24)]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unix_a, unix_b = socket.socketpair(socket.AF_UNIX)
    pipe_r, pipe_w = os.pipe()
    for s in tcp[::3]:
        s.setblocking(False)  # a mix of blocking and non-blocking: neither may change
    # What each fd must report: 0 for TCP; the kernel's answer for the others (a TCP option on a
    # UDP or Unix socket: ENOPROTOOPT setting, EOPNOTSUPP reading; ENOTSOCK for a pipe).
    expected = {s.fileno(): {0} for s in tcp}
    expected[udp.fileno()] = {errno.ENOPROTOOPT, errno.EOPNOTSUPP}
    expected[unix_a.fileno()] = {errno.EOPNOTSUPP, errno.ENOPROTOOPT}
    expected[pipe_r] = {errno.ENOTSOCK}
    owned = sorted(expected)
    flags_before = {fd: (fcntl.fcntl(fd, fcntl.F_GETFL), fcntl.fcntl(fd, fcntl.F_GETFD)) for fd in owned}

    shared: list[Any] = []

    class Mutating:
        """An entry whose fileno() changes the very list being converted."""

        def __init__(self, fd: int) -> None:
            self.fd = fd

        def fileno(self) -> int:
            action = random.random()
            if action < 0.05:
                shared.clear()
            elif action < 0.3:
                shared[: len(shared) // 2] = []
            else:
                shared.extend(entries[:4])
            return self.fd

    entries: list[Any] = []
    for s in tcp:
        entries += [s, s.fileno(), TransportSocket(s)]
    entries += [udp, udp.fileno(), unix_a, pipe_r, Mutating(tcp[0].fileno()), Mutating(pipe_r)]

    def refill() -> None:
        batch = random.sample(entries, random.randint(0, len(entries)))
        shared[:] = batch

    refill()
    stop = threading.Event()
    # One counter dict per caller, no lock: the timer's exception may land anywhere in the main
    # thread, and a lock held when it lands would never be released.
    stats = [
        {"calls": 0, "results_checked": 0, "entries_checked": 0, "interrupted": 0} for _ in range(n_callers)
    ]
    problems: list[str] = []
    applied: set[int] = set()

    def check(result: Any, kind: str, mine: dict[str, int]) -> None:
        n = len(result.fds)
        assert len(result.errnos) == len(result.options) == n, kind
        bad = 0
        for i in range(n):
            fd, err = result.fds[i], result.errnos[i]
            if fd not in expected or err not in expected[fd]:
                raise AssertionError(
                    f"{kind}: entry {i} fd {fd} errno {err} is not one of this run's outcomes"
                )
            bad += err != 0
            if kind == "apply" and err == 0:
                applied.add(fd)
        assert len(result.failed) == bad, (kind, len(result.failed), bad)
        if kind == "read":
            for i in range(n):
                if result.errnos[i] == 0:
                    assert result.idle[i] in (41, 7200) and result.count[i] in (5, 9), (kind, result[i])
        mine["results_checked"] += 1
        mine["entries_checked"] += n

    def caller(k: int, deadline: float = float("inf")) -> None:
        mine = stats[k]
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                mine["calls"] += 1
                if k % 2 == 0:
                    check(ka.apply_many(shared, policy, threads=1 + k % 3), "apply", mine)
                else:
                    check(ka.read_many(shared, threads=1 + k % 3), "read", mine)
            except Interrupted:
                mine["interrupted"] += 1
            except AssertionError as exc:
                problems.append(str(exc))
                stop.set()

    def mutator() -> None:
        while not stop.is_set():
            action = random.random()
            try:
                if action < 0.1:
                    shared.clear()
                elif action < 0.5:
                    refill()
                elif action < 0.7:
                    random.shuffle(shared)
                elif action < 0.85:
                    del shared[: random.randint(0, 8)]
                else:
                    shared.extend(random.sample(entries, 6))
            except (IndexError, ValueError, Interrupted):
                pass  # another mutator got there first, or the timer landed here

    def on_alarm(signum: int, frame: Any) -> None:
        if random.random() < 0.5:
            raise Interrupted

    # The main thread is caller 0: Python runs signal handlers there, so the timer's Interrupted
    # lands inside its calls.
    # Daemons: should the main thread die anyway, the process still ends (and the test fails).
    threads = [threading.Thread(target=caller, args=(k,), daemon=True) for k in range(1, n_callers)]
    threads += [threading.Thread(target=mutator, daemon=True) for _ in range(n_mutators)]
    for t in threads:
        t.start()
    sys.setswitchinterval(1e-6)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.003, 0.003)
    # At least `seconds`, then on until the figures the test asks for are in (a loaded machine or
    # the pure-Python twin makes fewer calls a second), but never past ENOUGH_WITHIN x `seconds`.
    start = time.monotonic()
    deadline, last = start + seconds, start + ENOUGH_WITHIN * seconds

    def enough() -> bool:
        total = {
            key: sum(st[key] for st in stats) for key in ("results_checked", "entries_checked", "interrupted")
        }
        return (
            total["results_checked"] > ENOUGH
            and total["entries_checked"] > ENOUGH
            and total["interrupted"] > 0
        )

    try:
        while True:
            try:  # the loop's test inside the try: the timer's exception may land there too
                now = time.monotonic()
                if stop.is_set() or now >= last or (now >= deadline and enough()):
                    break
                caller(0, min(max(deadline, now + 0.05), last))
            except Interrupted:
                stats[0]["interrupted"] += 1  # landed between two calls
    finally:
        while True:  # the timer's exception may land in this clean-up too: repeat until done
            try:
                signal.setitimer(signal.ITIMER_REAL, 0, 0)
                signal.signal(signal.SIGALRM, signal.SIG_IGN)
                break
            except Interrupted:
                continue
        stop.set()
    for t in threads:
        t.join()
    sys.setswitchinterval(0.005)
    assert not problems, problems[:3]

    # Nothing of ours closed or changed, and the policy really landed on the TCP sockets.
    for fd in owned:
        os.fstat(fd)
        assert (fcntl.fcntl(fd, fcntl.F_GETFL), fcntl.fcntl(fd, fcntl.F_GETFD)) == flags_before[fd], fd
    assert applied and all(ka.read(fd).idle == 41 for fd in applied), applied
    figures: dict[str, Any] = {key: sum(st[key] for st in stats) for key in stats[0]}
    figures["threads"] = n_callers + n_mutators
    figures["implementation"] = ka.IMPLEMENTATION
    print(json.dumps(figures), flush=True)
    for s in [*tcp, udp, unix_a, unix_b]:
        s.close()
    os.close(pipe_r)
    os.close(pipe_w)


def ownership(seconds: float) -> None:
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() with threads, on purpose
    from ka import _impl

    uring = _impl.core.uring_status()[0] == 0
    backend: Any = "io_uring" if uring else "auto"
    policy = ka.KeepAlive(idle=43, interval=7, count=4)
    listener = socket.create_server(("127.0.0.1", 0), backlog=512)
    address = listener.getsockname()

    def tcp_end() -> socket.socket:
        client = socket.create_connection(address)
        peer, _ = listener.accept()
        keep.append(client)  # the far end stays open, and is no target
        return peer

    keep: list[socket.socket] = []
    lock = threading.Lock()  # the churner's and the daemonizer's changes to the fd table
    targets: dict[int, Any] = {}  # number -> the object holding it
    for _ in range(48):
        s = tcp_end()
        targets[s.fileno()] = s

    def state(fd: int) -> tuple[int, ...]:
        st = os.fstat(fd)
        flags = (fcntl.fcntl(fd, fcntl.F_GETFL), fcntl.fcntl(fd, fcntl.F_GETFD), st.st_ino)
        try:
            with socket.socket(fileno=os.dup(fd)) as s:
                return (*flags, s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
        except OSError:
            return (*flags, -1)  # not a socket

    # Descriptors ka is never given: each must end exactly as it started.
    null = open(os.devnull, "rb")  # noqa: SIM115  # held open for the whole run
    foreign_objects: list[Any] = [listener, *keep, tcp_end(), null]
    pipe_r, pipe_w = os.pipe()
    foreign = {fd: state(fd) for fd in [o.fileno() for o in foreign_objects] + [pipe_r, pipe_w]}
    known_at_start = {int(n) for n in os.listdir("/proc/self/fd")}
    stop = threading.Event()
    figures = {"calls": 0, "forks": 0, "hangs": 0, "churned": 0, "sweeps": 0, "ka_fds_seen": 0}
    problems: list[str] = []
    allowed = {0, errno.EBADF, errno.ENOTSOCK, errno.ENOPROTOOPT, errno.EOPNOTSUPP}

    def caller(threads: int) -> None:
        while not stop.is_set():
            with lock:
                numbers = list(targets)
            result = ka.apply_many(numbers, policy, threads=threads, backend=backend)
            figures["calls"] += 1
            bad = {e for e in result.errnos if e not in allowed}
            if bad:
                problems.append(f"errnos {bad} from a call over reused numbers")

    def churner() -> None:
        def devnull() -> Any:
            return open(os.devnull, "rb")  # a target: closed by the churner

        def udp() -> Any:
            return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

        kinds: list[Callable[[], Any]] = [tcp_end, devnull, udp]
        while not stop.is_set():
            with lock:
                fd = random.choice(list(targets))
                targets.pop(fd).close()  # closed under a call that may be using the number
                new = random.choice(kinds)()  # most often the same number, now another file
                targets[new.fileno()] = new
                figures["churned"] += 1
            time.sleep(0.0005)

    def daemonizer() -> None:
        while not stop.is_set():
            time.sleep(0.01)
            with lock:
                mine = known_at_start | set(targets) | set(foreign) | {o.fileno() for o in keep}
                for name in os.listdir("/proc/self/fd"):
                    fd = int(name)
                    if fd in mine:
                        continue
                    try:
                        os.fstat(fd)
                    except OSError:
                        continue  # the listing's own descriptor, closed by now
                    # Not the program's: what closerange() while daemonizing closes. A canary
                    # socket takes its number, and ka must never close or change it.
                    figures["ka_fds_seen"] += 1
                    canary = tcp_end()
                    os.dup2(canary.fileno(), fd)
                    canary.close()
                    foreign[fd] = state(fd)
                figures["sweeps"] += 1

    def forker() -> None:
        while not stop.is_set():
            time.sleep(0.005)
            with lock:
                numbers = list(targets)
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    signal.alarm(10)  # a child stuck on a lock its parent held is killed: a hang
                    ka.apply_many(numbers, policy, threads=1, backend=backend)
                    ka.apply_many(numbers, policy, threads=2, backend=backend)
                    code = 0
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            figures["forks"] += 1
            if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM:
                figures["hangs"] += 1
            elif os.waitstatus_to_exitcode(status) != 0:
                problems.append(f"a child exited with {os.waitstatus_to_exitcode(status)}")

    threads = [threading.Thread(target=caller, args=(t,), daemon=True) for t in (1, 2)]
    threads += [threading.Thread(target=f, daemon=True) for f in (churner, daemonizer, forker)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    touched = []
    for fd, before in foreign.items():
        try:
            after = state(fd)
        except OSError:
            after = ()
        if after != before:
            touched.append(fd)
    assert not problems, problems[:3]
    ka.release_workers()
    out: dict[str, Any] = dict(figures)
    out["foreign_fds"] = len(foreign)
    out["foreign_touched"] = len(touched)
    out["backend"] = backend
    out["implementation"] = ka.IMPLEMENTATION
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "ownership":
        ownership(float(sys.argv[2]))
    else:
        main()
