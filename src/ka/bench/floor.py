"""The C floor: the same setsockopt/getsockopt calls in a plain C loop, compiled at run time.

Built with the system compiler into a shared library and called through ctypes on the same
descriptors, so it is measured exactly like the other methods. No compiler: ``load()`` returns None
and says why.
"""

from __future__ import annotations

import array
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile

SOURCE = r"""
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#ifndef TCP_KEEPIDLE
#define TCP_KEEPIDLE TCP_KEEPALIVE
#endif
#if defined(__linux__) && !defined(TCP_USER_TIMEOUT)
#define TCP_USER_TIMEOUT 18
#endif
#if defined(__APPLE__) && !defined(TCP_RXT_CONNDROPTIME)
#define TCP_RXT_CONNDROPTIME 0x80
#endif

/* SO_KEEPALIVE, then idle, interval, count: the four calls of a keepalive policy, in ka's order. */
int floor_apply(const int *fds, int n, int idle, int interval, int count)
{
    int i, failed = 0, on = 1;
    for (i = 0; i < n; i++) {
        int fd = fds[i];
        failed += setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) != 0;
        failed += setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) != 0;
        failed += setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval)) != 0;
        failed += setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count)) != 0;
    }
    return failed;
}

/* SO_KEEPALIVE, idle, interval, count, user timeout: the five reads of ka.read_many. */
int floor_read(const int *fds, int n, int *out)
{
    int i, failed = 0;
    for (i = 0; i < n; i++) {
        int fd = fds[i];
        int *v = out + 5 * i;
        socklen_t len;
        len = sizeof(int); failed += getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v[0], &len) != 0;
        len = sizeof(int); failed += getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v[1], &len) != 0;
        len = sizeof(int); failed += getsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v[2], &len) != 0;
        len = sizeof(int); failed += getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v[3], &len) != 0;
#if defined(__linux__)
        len = sizeof(int); failed += getsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &v[4], &len) != 0;
#elif defined(__APPLE__)
        len = sizeof(int); failed += getsockopt(fd, IPPROTO_TCP, TCP_RXT_CONNDROPTIME, &v[4], &len) != 0;
#endif
    }
    return failed;
}
"""


class Floor:
    """The compiled loops, callable on an ``array('i')`` of descriptors."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        lib.floor_apply.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.floor_apply.restype = ctypes.c_int
        lib.floor_read.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        lib.floor_read.restype = ctypes.c_int

    def apply(self, fds: array.array[int], idle: int, interval: int, count: int) -> int:
        """Set the four options on every fd; returns how many calls failed."""
        address, n = fds.buffer_info()
        return int(self._lib.floor_apply(address, n, idle, interval, count))

    def read(self, fds: array.array[int], out: array.array[int]) -> int:
        """Read the five options of every fd into ``out`` (5 ints per fd); returns failed calls."""
        address, n = fds.buffer_info()
        return int(self._lib.floor_read(address, n, out.buffer_info()[0]))


def load() -> tuple[Floor | None, str]:
    """Compile and load the floor; (None, reason) where that cannot be done here."""
    if sys.platform == "win32":
        return None, "the C floor is built for POSIX systems only"
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None, "no C compiler (cc, gcc or clang) on PATH"
    # The directory goes once the library is loaded: a loaded library outlives its file on POSIX.
    with tempfile.TemporaryDirectory(prefix="ka-floor-") as workdir:
        source = os.path.join(workdir, "floor.c")
        library = os.path.join(workdir, "floor.so")
        with open(source, "w") as f:
            f.write(SOURCE)
        cmd = [compiler, "-O2", "-shared", "-fPIC", "-o", library, source]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return None, f"{' '.join(cmd)} failed: {proc.stderr.strip()[:200]}"
        return Floor(ctypes.CDLL(library)), f"compiled with {compiler} -O2"
