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
import shutil
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
from pathlib import Path
from types import ModuleType

import pytest

import ka
from helpers import build_shim_program, kernel_values
from ka._impl import env_flag
from ka.bench.pool import LoopbackPool
from ka.bench.strace import parse_strace_summary
from ka.protocol import Spec
from ka.targets import Backend

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
    # The system calls go 16 sockets per claim (io_uring 256: 200 sockets would be one claim).
    assert ka.apply_many(fds, POLICY, threads=2, backend="syscalls").ok
    assert c.worker_count() == 1
    assert ka.read_many(fds, threads=2).mismatches(POLICY) == []
    assert c.worker_count() == 1  # the same worker, woken again
    assert ka.apply_many(fds, POLICY, threads=3, backend="syscalls").ok
    assert c.worker_count() == 2
    assert _wait_for_workers(c, 0, 6) == 0  # idle workers exit (after about 2 s)
    assert ka.apply_many(fds, POLICY, threads=2, backend="syscalls").ok  # and come back when needed
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
                backend: Backend = "io_uring" if round_ % 3 == 0 and not c.uring_status()[0] else "syscalls"
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
    backend: Backend = "syscalls" if c.uring_status()[0] else "io_uring"
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
        ka.apply_many(fds, POLICY, backend="uring")  # type: ignore[arg-type]  # refused by the checker too


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
    auto = "backend='auto' uses the system-call loop: "
    assert note.startswith(f"{auto}io_uring cannot be used: io_uring_setup failed with {name}")
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


# -- what backend="auto" uses (issue 19 2.4) ------------------------------------------------------
AUTO_CHILD = textwrap.dedent(
    """
    import socket, sys
    import ka
    n = int(sys.argv[1])
    server = socket.create_server(("127.0.0.1", 0), backlog=n)
    clients = [socket.create_connection(server.getsockname()) for _ in range(n)]
    peers = [server.accept()[0] for _ in range(n)]
    result = ka.apply_many([p.fileno() for p in peers], ka.KeepAlive(idle=64, interval=6, count=4))
    assert result.ok and all(ka.read(p).idle == 64 for p in peers)
    """
)


@pytest.mark.skipif(shutil.which("strace") is None, reason="the 'strace' command is missing (package strace)")
@pytest.mark.parametrize("n", [10, 100])
def test_auto_sends_a_call_of_64_sockets_or_more_through_io_uring(
    c: ModuleType, n: int, tmp_path: Path
) -> None:
    """backend="auto" (the default) uses io_uring where it is usable and the call has at least
    URING_AUTO_MIN sockets (measured faster there), and says so in capabilities(). Seen from
    outside with strace: through io_uring, one setsockopt per socket (the first option, which
    proves it is a socket) and the other three options in io_uring_enter submissions."""
    _uring(c)
    caps = ka.capabilities()
    assert caps.bulk_backend == "io_uring" and c.URING_AUTO_MIN == 64
    assert f"a call of {c.URING_AUTO_MIN} sockets or more through io_uring" in caps.bulk_backend_note
    report = tmp_path / "strace.txt"
    done = subprocess.run(
        ["strace", "-f", "-c", "-o", str(report), "-e", "trace=setsockopt,io_uring_enter",
         sys.executable, "-c", AUTO_CHILD, str(n)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    calls = parse_strace_summary(report.read_text())
    calls["setsockopt"] -= 1  # create_server's SO_REUSEADDR
    if n >= c.URING_AUTO_MIN:
        assert calls["setsockopt"] == n and calls.get("io_uring_enter", 0) >= 3, calls
    else:
        assert calls["setsockopt"] == 4 * n and "io_uring_enter" not in calls, calls


# -- 64-entry rings: what kernels 6.5-6.12 get (issue 19 2.4) ----------------------------------
ONE_PAGE_RINGS_C = r"""
#include "_platform.h"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <arpa/inet.h>

#define N 700

int main(void)
{
    static int fds[N + 6];
    static int32_t e1[N + 6], e2[N + 6];
    static uint8_t o1[N + 6], o2[N + 6];
    int lst = socket(AF_INET, SOCK_STREAM, 0), i, k, v, pipefd[2], closed, threads;
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    ka_policy p = {1, 71, 7, 3, 4000};
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(0x7f000001);
    if (bind(lst, (struct sockaddr *)&a, sizeof(a)) || listen(lst, 1024))
        return 2;
    if (getsockname(lst, (struct sockaddr *)&a, &len))
        return 2;
    for (i = 0; i < N; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c, (struct sockaddr *)&a, sizeof(a)))
            return 3;
        fds[i] = accept(lst, NULL, NULL);
    }
    /* Kinds that fail, spread over several 64-entry submissions of one 256-socket batch. */
    closed = socket(AF_INET, SOCK_STREAM, 0);
    close(closed);
    if (pipe(pipefd))
        return 4;
    fds[N] = fds[70]; fds[70] = closed;
    fds[N + 1] = fds[130]; fds[130] = open("/dev/null", O_RDONLY);
    fds[N + 2] = fds[200]; fds[200] = pipefd[0];
    fds[N + 3] = fds[300]; fds[300] = socket(AF_INET, SOCK_DGRAM, 0);
    fds[N + 4] = fds[420]; fds[420] = -1;
    fds[N + 5] = fds[650]; fds[650] = lst;
    ka_bulk_init();
    if (ka_uring_status() != 0)
        return 5;
    for (threads = 1; threads <= 3; threads += 2) {
        size_t f1 = ka_apply_bulk(fds, 4, N + 6, &p, e1, o1, threads, KA_BACKEND_URING);
        size_t f2 = ka_apply_bulk(fds, 4, N + 6, &p, e2, o2, threads, KA_BACKEND_SYSCALLS);
        if (f1 != f2 || f1 != 5 || memcmp(e1, e2, sizeof(e1)) || memcmp(o1, o2, sizeof(o1)))
            return 6;
    }
    for (i = 0; i < N + 6; i++) {
        if (e1[i] != 0)
            continue;
        for (k = 0; k < 3; k++) {
            int names[3] = {TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT}, want[3] = {71, 7, 3};
            if (ka_get_int(fds[i], IPPROTO_TCP, names[k], &v) || v != want[k])
                return 7;
        }
    }
    k = (int)ka_apply_bulk(fds, 4, N + 6, &p, e1, o1, 1, KA_BACKEND_URING);
    printf("entries=%u failed=%d\n", ka_uring_entries, k);
    return 0;
}
"""


def test_one_page_rings_give_what_the_syscall_loop_gives(c: ModuleType, tmp_path: Path) -> None:
    """Kernels 6.5-6.12 take a ring's queues only in physically contiguous pages, so there ka
    makes 64-entry rings (each queue one page) and a 256-socket batch goes in four submissions per
    option. This kernel takes the 256-entry rings, so the shim is built with 64 here: the same
    errno and option as the system calls for live sockets and failing kinds placed across the
    submissions, and the values on every live socket."""
    _uring(c)
    binary = build_shim_program(ONE_PAGE_RINGS_C, tmp_path, "-DKA_URING_ENTRIES=64u")
    done = subprocess.run([binary], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
    assert done.stdout.strip() == "entries=64 failed=5"
