"""How fast ``ka audit`` reads connections held by other processes: connections per second.

Usage: ``python benchmarks/audit.py [--connections 100000] [--per-process 10000] [--rounds 3]``.

Servers and clients are child processes (a process may open 20,000 descriptors here): each server
accepts ``--per-process`` connections from its own client child, so ``--connections`` are held
on each side. The audit picks the server processes by pid (``--connections`` connections) and
checks a rule; it runs once with the TCP tables from sock_diag netlink and once from
/proc/PID/net/tcp, in alternating order, ``--rounds`` times. The table (twice as many sockets,
both ends being on loopback) is also timed alone, each way. Prints the best round of each.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from ka import audit, live
from ka.bench.pool import raise_fd_limit, stop_child

# A server child: listen, accept N, say "ready PORT", hold until stdin closes.
SERVER = r"""
import socket, sys, resource
limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
n = int(sys.argv[1])
listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
print(listener.getsockname()[1], flush=True)
held = [listener.accept()[0] for _ in range(n)]
print("ready", flush=True)
sys.stdin.read()
"""
CLIENT = r"""
import socket, sys, resource
limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
port, n = int(sys.argv[1]), int(sys.argv[2])
held = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
print("ready", flush=True)
sys.stdin.read()
"""


def start(code: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--per-process", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raise_fd_limit()
    children: list[subprocess.Popen[str]] = []
    servers: list[int] = []
    try:
        left = args.connections
        while left > 0:
            n = min(left, args.per_process)
            server = start(SERVER, n)
            children.append(server)
            assert server.stdout is not None
            port = int(server.stdout.readline())
            client = start(CLIENT, port, n)
            children.append(client)
            assert client.stdout is not None and client.stdout.readline().strip() == "ready"
            assert server.stdout.readline().strip() == "ready"
            servers.append(server.pid)
            left -= n
        print(f"{args.connections} connections held by {len(servers)} server processes (and as many clients)")
        processes = live.ProcessFilter(tuple(servers))
        connections = live.ConnectionFilter(states=live.normalize_states(["connected"]))
        rules = [audit.MaxDetection(60)]
        best: dict[str, float] = {}
        sockets = 0
        for round_number in range(args.rounds):
            order = ("sock_diag", "procfs") if round_number % 2 == 0 else ("procfs", "sock_diag")
            for source in order:
                started = time.perf_counter()
                report = audit.audit(rules, processes, connections, source=source)
                seconds = time.perf_counter() - started
                assert report.checked == args.connections, (report.checked, report.unreadable)
                assert set(report.scan.sources.values()) == {source}
                best[f"audit, {source}"] = min(best.get(f"audit, {source}", seconds), seconds)
            for name in ("table only, sock_diag", "table only, procfs"):
                started = time.perf_counter()
                entries = len(live.sock_diag_dump() if name.endswith("sock_diag") else live.tcp_table(None))
                seconds = time.perf_counter() - started
                sockets = entries  # the same table each time, give or take a few sockets
                best[name] = min(best.get(name, seconds), seconds)
        for name, seconds in best.items():
            count = args.connections if name.startswith("audit") else sockets
            print(f"{name:42} {seconds:7.3f} s  {count / seconds:10,.0f} per second")
        ratio = best["audit, procfs"] / best["audit, sock_diag"]
        print(f"audit with sock_diag is {ratio:.2f}x as fast as with /proc/net/tcp (best of {args.rounds})")
    finally:
        for child in children:
            stop_child(child, timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
