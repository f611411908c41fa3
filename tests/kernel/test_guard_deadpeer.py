"""A dead peer behind a guarded client is found on the policy's schedule: the client sets no
option itself; only the guard on its cgroup gives it idle 2 s, interval 1 s, 3 probes (5 s).

Two network namespaces joined by veth (tests/netns.py); a guarded client and an unguarded
control, both in the near namespace, each talk once to a server in the far one; then the far side
goes silent (nftables drop). The guarded client's blocked recv() fails with ETIMEDOUT about 5 s
after it last heard from the server; the control is still waiting.
"""

from __future__ import annotations

import errno
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

import netns
from guard_helpers import guard, made_cgroup, unavailable

REASON = unavailable() or netns.unavailable()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

POLICY_TEXT = "idle=2 interval=1 count=3"
DETECTION = 5.0
EARLY, LATE = 0.25, 1.0  # as tests/kernel/test_kernel_deadpeer.py: kernel timers, a busy 2-core machine

# The client: one exchange, then a blocked recv(); it reports how long after it last heard from
# the server the kernel failed the connection.
CLIENT = """
import socket, sys, time
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))
sock.sendall(b"ping")
assert sock.recv(4) == b"pong"
heard = time.monotonic()
print("ready", flush=True)
try:
    sock.recv(1)
    print("closed", 0, time.monotonic() - heard, flush=True)
except OSError as exc:
    print("died", exc.errno, time.monotonic() - heard, flush=True)
"""


def _line(proc: subprocess.Popen[str], timeout: float) -> str | None:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else None


def test_a_silent_peer_is_found_on_the_policys_schedule(guard_bpffs: Path) -> None:
    with netns.NetnsPair() as pair, made_cgroup("deadpeer") as cgroup:
        attached = guard("attach", POLICY_TEXT, "--cgroup", cgroup.path, "--bpffs", str(guard_bpffs))
        server = pair.listener("far")
        server.settimeout(10)
        port = str(server.getsockname()[1])
        # join the cgroup before `ip netns exec`, which mounts a new /sys without the cgroup tree
        inside = ["sh", "-c", f'echo $$ > {cgroup.directory}/cgroup.procs && exec "$@"', "sh"]
        clients = {}
        accepted = []
        try:
            for name, prefix in (("guarded", inside), ("control", [])):
                clients[name] = subprocess.Popen(
                    [
                        *prefix,
                        "ip",
                        "netns",
                        "exec",
                        pair.names["near"],
                        sys.executable,
                        "-c",
                        CLIENT,
                        netns.FAR_ADDR,
                        port,
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    clients[name].kill()
                    raise AssertionError(
                        f"the {name} client did not connect: {clients[name].communicate()}"
                    ) from None
                accepted.append(conn)
                assert conn.recv(4) == b"ping"
                conn.sendall(b"pong")
                assert _line(clients[name], 10) == "ready"
            time.sleep(0.2)  # the last ACKs out before the far side goes quiet
            pair.silence("far")
            silenced = time.monotonic()
            outcome = _line(clients["guarded"], DETECTION + LATE + 2)
            control = _line(clients["control"], max(0.0, silenced + DETECTION + LATE - time.monotonic()))
            (listed,) = [
                a
                for a in guard("list", "--bpffs", str(guard_bpffs))["attachments"]
                if a["cgroup_id"] == attached["cgroup_id"]
            ]
        finally:
            for proc in clients.values():
                if proc.poll() is None:
                    proc.kill()
                proc.communicate(timeout=10)
            for conn in accepted:
                conn.close()
            server.close()
            guard("detach", "--cgroup", cgroup.path, "--bpffs", str(guard_bpffs))
    assert outcome is not None, "the guarded client was still waiting"
    what, err, after = outcome.split()
    name = errno.errorcode.get(int(err), err)
    print(f"\nguarded client: {what} ({name}) {float(after):.3f} s after it last heard from the server")
    assert what == "died" and int(err) == errno.ETIMEDOUT, outcome
    assert DETECTION - EARLY <= float(after) <= DETECTION + LATE, after
    assert control is None, f"the unguarded control ended: {control}"
    assert listed["counters"]["handled"] == listed["counters"]["applied"] == 1  # the control is not in it
