"""How fast ``ka audit`` reads connections held by other processes, and what an exporter scrape costs.

Usage: ``python benchmarks/audit.py [--connections 100000] [--per-process 10000] [--rounds 3]
[--baseline SRC]``.

Servers and clients are child processes (a process may open 20,000 descriptors here): each server
accepts ``--per-process`` connections from its own client child, so ``--connections`` are held
on each side. The audit picks the server processes by pid (``--connections`` connections) and
checks a rule, with the TCP tables from sock_diag netlink and from /proc/PID/net/tcp. The table
alone (twice as many sockets, both ends being on loopback) is timed each way too, and a scrape of
``ka exporter``'s collector (refresh on scrape, with the rule) of every server, then of one.

Each measurement runs in a fresh Python process, the tasks interleaved over ``--rounds`` rounds
(the order reversed every other round); the best round of each is printed, as wall-clock time and
as CPU time (user + system of the measuring process, its threads included: on a shared machine,
the figure that leaves out time spent waiting for a core). ``--baseline SRC`` also times the
audit and the scrape with ka imported from SRC (a ``src`` directory with the compiled core built
in place, e.g. a checkout of an older commit), in the same rounds, so before and after come from
one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

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
# One measurement: argv is the task, the server pids (JSON) and the connections they hold.
MEASURE = r"""
import json, sys, time
task, servers, n = sys.argv[1], tuple(json.loads(sys.argv[2])), int(sys.argv[3])
import ka
from ka import audit, live
processes = live.ProcessFilter(servers)
connections = live.ConnectionFilter(states=live.normalize_states(["connected"]))
rules = [audit.MaxDetection(60)]
if task == "scrape":
    from prometheus_client import CollectorRegistry, generate_latest
    from ka.audit.metrics import Collector
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(rules, processes, connections))
cpu_started, started = time.process_time(), time.perf_counter()
if task.startswith("audit "):
    report = audit.audit(rules, processes, connections, source=task[6:])
    assert report.checked == n, (report.checked, report.unreadable)
    assert set(report.scan.sources.values()) == {task[6:]}
    count = report.checked
elif task == "table sock_diag":
    count = len(live.sock_diag_dump())
elif task == "table procfs":
    count = len(live.tcp_table(None))
elif task == "scrape":
    text = generate_latest(registry).decode()
    count = n
    assert "ka_scrape_errors_total 0.0" in text, text[:2000]
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
print(json.dumps({"wall": seconds, "cpu": cpu, "count": count, "core": ka.IMPLEMENTATION}))
"""


def start(code: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def measure(task: str, servers: list[int], n: int, source_tree: str | None) -> dict[str, float]:
    """One measurement in a fresh process; ``source_tree``: import ka from there (None: as installed)."""
    env = dict(os.environ, KA_REQUIRE_EXTENSIONS="1")
    if source_tree is not None:
        env["PYTHONPATH"] = source_tree
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, task, json.dumps(servers), str(n)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{task} ({source_tree or 'this ka'}) failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--per-process", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", metavar="SRC", help="also time the audit with ka from this source tree")
    args = parser.parse_args()
    if args.baseline is not None and not (Path(args.baseline) / "ka" / "__init__.py").is_file():
        parser.error(f"--baseline {args.baseline}: expected a source tree holding ka/__init__.py")
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        scrape: tuple[str, ...] = ()
        print("no prometheus-client: the exporter scrape is not timed (pip install 'ka[prometheus]')")
    else:
        scrape = ("scrape",)
    raise_fd_limit()
    children: list[subprocess.Popen[str]] = []
    servers: list[int] = []
    sizes: list[int] = []
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
            sizes.append(n)
            left -= n
        print(f"{args.connections} connections held by {len(servers)} server processes (and as many clients)")
        trees: list[tuple[str, str | None]] = [("", None)]
        if args.baseline is not None:
            trees.append((" (baseline)", args.baseline))
        # (row name, task, pids, connections, tree)
        plan: list[tuple[str, str, list[int], int, str | None]] = []
        for suffix, tree in trees:
            for source in ("sock_diag", "procfs"):
                plan.append((f"audit, {source}{suffix}", f"audit {source}", servers, args.connections, tree))
            for task in scrape:
                total = args.connections
                plan.append((f"scrape, {total} connections{suffix}", task, servers, total, tree))
                plan.append((f"scrape, {sizes[0]} connections{suffix}", task, servers[:1], sizes[0], tree))
        plan += [(f"table only, {s}", f"table {s}", servers, 0, None) for s in ("sock_diag", "procfs")]
        best: dict[str, dict[str, float]] = {}
        for round_number in range(args.rounds):
            for name, task, pids, n, tree in plan if round_number % 2 == 0 else plan[::-1]:
                got = measure(task, pids, n, tree)
                kept = best.setdefault(name, got)
                for key in ("wall", "cpu"):
                    kept[key] = min(kept[key], got[key])
        load = os.getloadavg()[0]
        print(f"best of {args.rounds} rounds (load average {load:.1f} on {os.cpu_count()} CPUs):")
        for name, got in best.items():
            count = got["count"]
            if name.startswith("scrape"):
                per_1000 = got["wall"] * 1000 / count * 1000
                print(
                    f"{name:46} {got['wall'] * 1000:8.0f} ms wall {got['cpu'] * 1000:8.0f} ms CPU"
                    f"  {per_1000:6.1f} ms per 1,000 connections"
                )
            else:
                print(
                    f"{name:46} {got['wall']:8.3f} s wall {got['cpu']:8.3f} s CPU"
                    f"  {count / got['wall']:9,.0f} per second"
                )
        ratio = best["audit, procfs"]["wall"] / best["audit, sock_diag"]["wall"]
        print(f"audit with sock_diag is {ratio:.2f}x as fast as with /proc/net/tcp (wall clock)")
        if args.baseline is not None:
            for source in ("sock_diag", "procfs"):
                old, new = best[f"audit, {source} (baseline)"], best[f"audit, {source}"]
                print(
                    f"audit, {source}: {old['wall'] / new['wall']:.2f}x as fast as the baseline wall "
                    f"clock, {old['cpu'] / new['cpu']:.2f}x in CPU time"
                )
    finally:
        for child in children:
            stop_child(child, timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
