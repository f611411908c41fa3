"""ka's tables against the kernel and its headers (tables mutation testing cannot change): the TCP
state and timer codes of /proc/net/tcp against what ``ss`` reads over netlink, the Linux limits
against what setsockopt accepts, the capability names against linux/capability.h.

Already checked elsewhere: keepalive timers against ``ss -tno`` (tests/adapters/test_live.py), the
option numbers and limits of every OS against its SDK headers (tools/platform_constants.c in
``nox -s platforms``) and against the shim (tests/adapters/test_platforms.py,
tests/core/test_apply.py::test_core_limits_match_python_mirror), the platform codes (both).
"""

from __future__ import annotations

import errno
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ka import _options
from ka.live import procfs
from ka.live.model import TcpEntry

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux /proc and headers")

# ss's state column (iproute2 misc/ss.c, sstate_name) -> ka's name for the same kernel state.
SS_NAMES = {
    "ESTAB": "established",
    "SYN-SENT": "syn-sent",
    "SYN-RECV": "syn-recv",
    "FIN-WAIT-1": "fin-wait-1",
    "FIN-WAIT-2": "fin-wait-2",
    "TIME-WAIT": "time-wait",
    "UNCONN": "close",
    "CLOSE-WAIT": "close-wait",
    "LAST-ACK": "last-ack",
    "LISTEN": "listen",
    "CLOSING": "closing",
}


def _proc_entries(port: int) -> dict[tuple[str, str], TcpEntry]:
    """This namespace's /proc/net/tcp lines touching ``port``, TIME_WAIT ones (inode 0) included."""
    found = {}
    for line in Path("/proc/self/net/tcp").read_text().splitlines()[1:]:
        entry = procfs.parse_tcp_line(line, "ipv4")
        if port in (entry.local.port, entry.remote.port):
            found[(str(entry.local), str(entry.remote))] = entry
    return found


def _ss(port: int) -> dict[tuple[str, str], tuple[str, str]]:
    """(state, timer field) of every TCP socket ``ss -tanoH`` shows touching ``port``."""
    out = subprocess.run(
        ["ss", "-tanoH", f"( sport = :{port} or dport = :{port} )"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = {}
    for line in out.splitlines():
        fields = line.split()
        timer = next((f for f in fields if f.startswith("timer:(")), "")
        found[(fields[3], fields[4])] = (fields[0], timer)
    return found


def test_state_and_timer_codes_are_the_kernels() -> None:
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        open_pair = socket.create_connection(("127.0.0.1", port)), listener.accept()[0]
        half_closed = socket.create_connection(("127.0.0.1", port)), listener.accept()[0]
        half_closed[0].shutdown(socket.SHUT_WR)  # FIN-WAIT-2 here, CLOSE-WAIT on the other end
        closed = socket.create_connection(("127.0.0.1", port)), listener.accept()[0]
        closed[0].close()
        closed[1].close()  # the first closer ends in TIME-WAIT
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                by_ss = _ss(port)
                states = {state for state, _ in by_ss.values()}
                if {"LISTEN", "ESTAB", "FIN-WAIT-2", "CLOSE-WAIT", "TIME-WAIT"} <= states:
                    break
                time.sleep(0.05)
            entries = _proc_entries(port)
        finally:
            for sock in (*open_pair, *half_closed):
                sock.close()
    assert {state for state, _ in by_ss.values()} >= {
        "LISTEN",
        "ESTAB",
        "FIN-WAIT-2",
        "CLOSE-WAIT",
        "TIME-WAIT",
    }
    for (local, peer), (state, timer) in by_ss.items():
        peer = "0.0.0.0:0" if peer == "0.0.0.0:*" else peer
        entry = entries[(local, peer)]
        assert entry.state == SS_NAMES[state], (local, peer, state)
        if state == "TIME-WAIT":  # code 3: the time-wait timer, as ss shows it
            assert entry.timer.name == "timewait" and timer.startswith("timer:(timewait,")
        elif state in ("ESTAB", "LISTEN"):  # keepalive off, nothing in flight
            assert entry.timer.name == "none" and timer == ""


def test_linux_limits_are_what_the_kernel_accepts() -> None:
    limits = _options.LIMITS_BY_PLATFORM["linux"]
    checks = [
        (socket.TCP_KEEPIDLE, limits.max_idle),
        (socket.TCP_KEEPINTVL, limits.max_interval),
        (socket.TCP_KEEPCNT, limits.max_count),
    ]
    with socket.socket() as sock:
        for option, maximum in checks:
            sock.setsockopt(socket.IPPROTO_TCP, option, maximum)
            assert sock.getsockopt(socket.IPPROTO_TCP, option) == maximum
            for beyond in (maximum + 1, 0):
                with pytest.raises(OSError) as info:
                    sock.setsockopt(socket.IPPROTO_TCP, option, beyond)
                assert info.value.errno == errno.EINVAL, (option, beyond)
        # TCP_USER_TIMEOUT takes any non-negative int of milliseconds
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, limits.max_user_timeout_ms)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == limits.max_user_timeout_ms
        assert limits.max_user_timeout_ms == 2**31 - 1
        with pytest.raises(OSError) as info:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, -1)
        assert info.value.errno == errno.EINVAL


def test_capability_names_are_the_headers() -> None:
    header = Path("/usr/include/linux/capability.h")
    if not header.exists():
        pytest.skip("linux/capability.h is not installed (Debian package linux-libc-dev)")
    defined = {
        int(bit): name.lower()
        for name, bit in re.findall(r"^#define CAP_(\w+)\s+(\d+)\s*$", header.read_text(), flags=re.MULTILINE)
        if name not in ("LAST_CAP",)
    }
    assert {bit: name for bit, name in enumerate(procfs.CAPABILITY_NAMES) if bit in defined} == {
        bit: name for bit, name in defined.items() if bit < len(procfs.CAPABILITY_NAMES)
    }
    assert procfs.CAPABILITY_NAMES[procfs.CAP_SYS_PTRACE] == "sys_ptrace" == defined[procfs.CAP_SYS_PTRACE]
