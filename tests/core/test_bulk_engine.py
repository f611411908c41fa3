"""The compiled bulk engine: persistent workers and the io_uring backend, proven on live sockets.

Workers: started on first need, reused, gone after a while idle, absent in a forked child, safe
with concurrent callers. io_uring: the same errno and option as the system-call loop for every
kind of descriptor, detection that falls back (seccomp), and a forced backend that says why not.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from types import ModuleType

import pytest

import ka
from helpers import kernel_values
from ka._impl import env_flag
from ka.bench.pool import LoopbackPool
from ka.protocol import Spec

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux option numbers and io_uring"),
    pytest.mark.skipif(env_flag("KA_NO_EXTENSIONS"), reason="KA_NO_EXTENSIONS: no compiled core"),
]

POLICY = ka.KeepAlive(idle=43, interval=8, count=5, user_timeout=7)
EXPECTED = (1, 43, 8, 5, 7000)


@pytest.fixture(scope="module")
def c() -> ModuleType:
    import importlib

    return importlib.import_module("ka._ka_c")


@pytest.fixture(scope="module")
def pool() -> Iterator[LoopbackPool]:
    with LoopbackPool(200) as p:
        yield p


def _uring(c: ModuleType) -> None:
    err, why = c.uring_status()
    if err:
        pytest.skip(f"io_uring is not usable here: {why}")


def _wait_for_workers(c: ModuleType, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while c.worker_count() != count and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(c.worker_count())


# -- workers ------------------------------------------------------------------------------------
def test_workers_start_on_need_persist_between_calls_and_exit_when_idle(
    c: ModuleType, pool: LoopbackPool
) -> None:
    fds = pool.fds()
    assert _wait_for_workers(c, 0, 5) == 0  # whatever an earlier test left has gone
    ka.apply_many(fds, POLICY, threads=1)
    assert c.worker_count() == 0  # one thread: no worker is started
    assert ka.apply_many(fds, POLICY, threads=2).ok
    assert c.worker_count() == 1
    assert ka.read_many(fds, threads=2).mismatches(POLICY) == []
    assert c.worker_count() == 1  # the same worker, woken again
    assert ka.apply_many(fds, POLICY, threads=3).ok
    assert c.worker_count() == 2
    assert _wait_for_workers(c, 0, 6) == 0  # idle workers exit (after about 2 s)
    assert ka.apply_many(fds, POLICY, threads=2).ok  # and come back when needed
    assert c.worker_count() == 1


def test_threads_beyond_the_chunks_start_no_idle_workers(c: ModuleType, pool: LoopbackPool) -> None:
    """16 sockets per chunk: 20 sockets are 2 chunks, so at most one helper is worth waking."""
    fds = pool.fds()[:20]
    _wait_for_workers(c, 0, 6)
    assert ka.apply_many(fds, POLICY, threads=8).ok
    assert c.worker_count() == 1


def test_concurrent_callers_each_get_their_own_complete_result(c: ModuleType, pool: LoopbackPool) -> None:
    """Eight Python threads, each with its own slice and policy, share the workers without loss."""
    socks = pool.sockets
    slices = [socks[k::8] for k in range(8)]
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            policy = ka.KeepAlive(idle=100 + k, interval=10 + k, count=3)
            fds = [s.fileno() for s in slices[k]]
            for round_ in range(30):
                backend = "io_uring" if round_ % 3 == 0 and not c.uring_status()[0] else "syscalls"
                result = ka.apply_many(fds, policy, threads=2 + k % 3, backend=backend)
                assert result.ok and len(result) == len(fds)
                assert ka.read_many(fds, threads=2).mismatches(policy) == []
        except BaseException as exc:  # reported below, from the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for k, part in enumerate(slices):
        assert all(kernel_values(s)[1:3] == (100 + k, 10 + k) for s in part)


def test_a_forked_child_has_no_workers_and_no_ring_of_its_parent(c: ModuleType, pool: LoopbackPool) -> None:
    """The child must not wait for threads that do not exist there, nor share its parent's ring."""
    fds = pool.fds()
    backend = "syscalls" if c.uring_status()[0] else "io_uring"
    assert ka.apply_many(fds, POLICY, threads=2, backend=backend).ok
    assert c.worker_count() >= 1
    child_policy = ka.KeepAlive(idle=77, interval=7, count=7)
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        # CPython 3.12+ warns on fork() in a process with threads: forking one with ka's worker
        # threads running is what this test checks.
        warnings.filterwarnings("ignore", r"This process .* is multi-threaded", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        status = 1
        try:
            before = c.worker_count()
            ok = ka.apply_many(fds, child_policy, threads=2, backend=backend).ok
            ok = ok and ka.read_many(fds, threads=2).mismatches(child_policy) == []
            os.write(write_fd, f"{before} {int(ok)} {c.worker_count()}".encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    report = os.read(read_fd, 100).decode()
    os.close(read_fd)
    assert status == 0, report
    assert report == "0 1 1"  # no inherited workers; the child's own call worked and started one
    # the parent's pool and ring still work, and see what the child set
    assert ka.read_many(fds).mismatches(child_policy) == []
    assert ka.apply_many(fds, POLICY, threads=2, backend=backend).ok
    assert ka.read_many(fds).mismatches(POLICY) == []


# -- io_uring -----------------------------------------------------------------------------------
def test_getsockopt_through_io_uring_takes_no_tcp_level_here(c: ModuleType) -> None:
    """Why read_many keeps its system calls: the kernel's SOCKET_URING_OP_GETSOCKOPT refuses
    IPPROTO_TCP (io_uring/cmd_net.c: level != SOL_SOCKET -> -EOPNOTSUPP)."""
    _uring(c)
    assert "refuses TCP-level options (EOPNOTSUPP)" in c.uring_status()[1]


@pytest.mark.parametrize("threads", [1, 3])
def test_io_uring_gives_what_the_syscall_loop_gives_for_every_kind_of_descriptor(
    c: ModuleType, pool: LoopbackPool, threads: int
) -> None:
    _uring(c)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ua, ub = socket.socketpair()
    listener = socket.create_server(("127.0.0.1", 0))
    r, w = os.pipe()
    with tempfile.TemporaryFile() as f, open(os.devnull, "rb") as null, udp, ua, ub, listener:
        closed = socket.socket()  # made last, so no descriptor opened here reuses its number
        closed_fd = closed.fileno()
        closed.close()
        try:
            odd = [closed_fd, f.fileno(), null.fileno(), udp.fileno(), ua.fileno(), listener.fileno(), r, -1]
            fds = [s.fileno() for s in pool.sockets[:150]]
            for k, fd in enumerate(odd):
                fds.insert(17 * k + 3, fd)
            results = {}
            for backend in ("syscalls", "io_uring"):
                policy = ka.KeepAlive(idle=50, interval=5, count=4, user_timeout=3)
                result = ka.apply_many(fds, policy, threads=threads, backend=backend)
                results[backend] = (list(result.errnos), list(result.options), result.failed_count)
                assert ka.read_many(pool.sockets[:150]).mismatches(policy) == []
                ka.apply_many(fds, ka.KeepAlive.disabled(), backend="syscalls")  # reset for the next
            assert results["io_uring"] == results["syscalls"]
            errnos = dict(zip(fds, results["io_uring"][0]))
            assert errnos[f.fileno()] == errno.ENOTSOCK  # io_uring itself says EOPNOTSUPP here
            # /dev/null takes any io_uring command and answers 0: no command may reach it
            assert errnos[null.fileno()] == errno.ENOTSOCK
            assert errnos[udp.fileno()] == errno.ENOPROTOOPT
            assert errnos[closed_fd] == errno.EBADF and errnos[-1] == errno.EBADF
            assert errnos[listener.fileno()] == 0  # a listener takes the options
        finally:
            os.close(r)
            os.close(w)


def test_a_failing_option_stops_the_rest_of_that_socket_as_the_loop_does(c: ModuleType) -> None:
    """A UDP socket takes SO_KEEPALIVE (the first call) and refuses TCP_KEEPIDLE: through io_uring
    too, the failure is the idle's and no later option is tried, exactly as with one system call
    per option (the loop's result for the same socket is the reference)."""
    _uring(c)
    policy = ka.KeepAlive(idle=30, interval=5, count=3)
    results = {}
    for backend in ("syscalls", "io_uring"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            result = ka.apply_many([udp], policy, backend=backend)
            results[backend] = [(f.errno, f.option) for f in result.failed]
            assert udp.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert results["io_uring"] == results["syscalls"] == [(errno.ENOPROTOOPT, ka.Option.IDLE)]


def test_a_bad_backend_is_refused_before_any_system_call(pool: LoopbackPool) -> None:
    fds = pool.fds()[:5]
    with pytest.raises(ValueError, match="backend='uring' is not one of 'auto', 'io_uring', 'syscalls'"):
        ka.apply_many(fds, POLICY, backend="uring")


def test_the_twin_says_why_it_cannot_use_io_uring(
    pool: LoopbackPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ka import _ka_py, bulk

    monkeypatch.setattr(bulk, "core", _ka_py)  # the face's bulk calls over the twin
    before = kernel_values(pool.sockets[0])
    with pytest.raises(OSError, match="backend='io_uring' cannot be used here: the pure-Python twin") as info:
        ka.apply_many(pool.fds()[:1], ka.KeepAlive(idle=99, interval=9, count=9), backend="io_uring")
    assert info.value.errno == errno.ENOSYS
    assert kernel_values(pool.sockets[0]) == before


# A child process whose seccomp filter answers io_uring_setup with an errno: what a container
# runtime's default profile does. It must fall back, say why, and refuse a forced io_uring.
SECCOMP_CHILD = textwrap.dedent(
    """
    import ctypes, errno, socket, struct, sys
    answer = int(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    # BPF: load the syscall number; io_uring_setup (425) -> SECCOMP_RET_ERRNO | answer; else allow.
    code = [(0x20, 0, 0, 0), (0x15, 0, 1, 425), (0x06, 0, 0, 0x00050000 | answer), (0x06, 0, 0, 0x7FFF0000)]
    insns = b"".join(struct.pack("=HBBI", *i) for i in code)
    buf = ctypes.create_string_buffer(insns)
    prog = struct.pack("@HP", len(code), ctypes.addressof(buf))
    prog_buf = ctypes.create_string_buffer(prog)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    assert libc.prctl(38, 1, None, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.addressof(prog_buf), 0, 0) == 0, ctypes.get_errno()  # SECCOMP_MODE_FILTER
    import ka
    caps = ka.capabilities()
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    policy = ka.KeepAlive(idle=61, interval=6, count=6)
    try:
        ka.apply_many([peer], policy, backend="io_uring")
        forced = "applied"
    except OSError as exc:
        forced = f"OSError {exc.errno}"
    untouched = peer.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    auto = ka.apply_many([peer], policy).ok and ka.read(peer).idle == 61
    print(caps.bulk_backend, "|", caps.bulk_backend_note, "|", forced, untouched, auto)
    """
)


@pytest.mark.parametrize("answer", [errno.EPERM, errno.ENOSYS])
def test_seccomp_refusing_io_uring_falls_back_and_says_why(answer: int) -> None:
    if platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip("the filter's syscall number (425) is checked for x86_64 and aarch64 only")
    out = subprocess.run(
        [sys.executable, "-c", SECCOMP_CHILD, str(answer)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    backend, note, rest = out.stdout.strip().split(" | ")
    assert backend == "syscalls"
    name = errno.errorcode[answer]
    assert note.startswith(f"io_uring cannot be used: io_uring_setup failed with {name}")
    if answer == errno.EPERM:
        assert "seccomp" in note
    assert rest == f"OSError {answer} True True"


def test_a_keepalive_carries_its_c_values_packed_once() -> None:
    policy = ka.KeepAlive(idle=12, interval=3, count=4, user_timeout=0.5)
    assert struct.unpack("=5i", policy.packed) == policy.spec == (1, 12, 3, 4, 500)
    assert policy.spec == Spec(enabled=1, idle=12, interval=3, count=4, user_timeout_ms=500)
    assert struct.unpack("=5i", ka.KeepAlive.disabled().packed) == (0, -1, -1, -1, -1)
    assert ctypes.sizeof(ctypes.c_int) * 5 == len(policy.packed)


def test_read_built_in_c_is_a_true_keepalivesettings(pool: LoopbackPool) -> None:
    """The C-built result equals, hashes and behaves like one made in Python, and a remembered
    result is never stale: a read after a change gives the new values."""
    sock = pool.sockets[0]
    ka.apply(sock, ka.KeepAlive(idle=21, interval=4, count=3, user_timeout=2.5))
    first = ka.read(sock)
    made = ka.KeepAliveSettings(True, 21, 4, 3, 2.5)
    assert type(first) is ka.KeepAliveSettings
    assert first == made and hash(first) == hash(made) and {first: 1}[made] == 1
    assert first._replace(idle=22) == (True, 22, 4, 3, 2.5)
    assert first.detection_time == made.detection_time
    assert ka.read(sock) == first
    ka.apply(sock, ka.KeepAlive(idle=23, interval=5, count=2))
    assert ka.read(sock) == (True, 23, 5, 2, 2.5)
    ka.apply(sock, ka.KeepAlive.disabled())
    assert ka.read(sock).enabled is False
