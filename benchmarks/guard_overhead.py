"""What ka guard costs a new connection: connect+accept pairs on loopback, with and without the
sock_ops program, timed in one run (root, Linux 5.9+).

    sudo python benchmarks/guard_overhead.py [--pairs 500] [--rounds 41] [--policy "within=30s"]

The process makes two cgroups under one of its own, attaches the policy to one (pinned in a
private BPF filesystem, never /sys/fs/bpf), and moves itself between them: in each round it
makes a listener and then ``--pairs`` connections (socket, connect, accept, close both ends)
inside one cgroup, then the other, in a random order. Both ends are in the cgroup, so each pair
runs the program twice (the outgoing and the accepted connection). It prints the median time per
pair of each and their ratio, and checks the program's counters against the pairs it made.
Everything it made is removed at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ka.guard
from ka.guard import loader, syscall
from ka.live import cgroup as cgroups

LINGER_RESET = struct.pack("ii", 1, 0)  # close with a reset: no TIME_WAIT piles up across rounds


def pairs(n: int) -> float:
    """Seconds per connect+accept pair, ``n`` pairs on a listener made here (in this cgroup)."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listener:
        address = listener.getsockname()
        start = time.perf_counter()
        for _ in range(n):
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            client.connect(address)
            accepted, _ = listener.accept()
            accepted.close()
            client.close()
        return (time.perf_counter() - start) / n


def join(directory: Path) -> None:
    (directory / "cgroup.procs").write_text(str(os.getpid()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=500, help="connections per round and mode (default 500)")
    parser.add_argument("--rounds", type=int, default=41, help="interleaved rounds (default 41)")
    parser.add_argument("--policy", default="within=30s", help="the policy attached (default within=30s)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("guard_overhead: needs root (a cgroup, a BPF program, a bpffs mount)", file=sys.stderr)
        return 2
    home = cgroups.of_pid(os.getpid())
    top = cgroups.cgroup2_mount() / f"ka-bench-guard-{os.getpid()}"
    bpffs = Path(tempfile.mkdtemp(prefix="ka-bench-bpffs-"))
    made: list[Path] = []
    mounted = False
    try:
        for path in (top, top / "guarded", top / "plain"):
            path.mkdir()
            made.append(path)
        subprocess.run(["mount", "-t", "bpf", "bpf", str(bpffs)], check=True)
        mounted = True
        guarded = cgroups.resolve(top / "guarded")
        attached = ka.guard.attach(args.policy, guarded.directory, bpffs=bpffs)
        modes = {"with the program": top / "guarded", "without": top / "plain"}
        times: dict[str, list[float]] = {name: [] for name in modes}
        for directory in modes.values():  # warm-up, not counted
            join(directory)
            pairs(min(200, args.pairs))
        for _ in range(args.rounds):
            order = list(modes)
            random.shuffle(order)
            for name in order:
                join(modes[name])
                times[name].append(pairs(args.pairs))
        # then the kernel's own account of the program's run time (it adds to the time it counts,
        # so it is kept out of the timed rounds), over one more round in the guarded cgroup
        with (
            loader.Fd(syscall.enable_stats(), "run-time statistics"),
            loader.Fd(syscall.prog_get_fd_by_id(attached.prog_id), "program") as program,
        ):
            join(modes["with the program"])
            pairs(args.pairs)
            run = syscall.prog_info(program.fd)
        join(home.directory)
        final = ka.guard.detach(guarded.directory, bpffs=bpffs)
        expected = 2 * ((args.rounds + 1) * args.pairs + min(200, args.pairs))
        # each round's ratio: both modes ran back to back, so slow drift of the machine cancels
        ratios = [w / o for w, o in zip(times["with the program"], times["without"])]
        extra = statistics.median(w - o for w, o in zip(times["with the program"], times["without"]))
        print(f"kernel {os.uname().release}, {attached.policy}, {args.rounds} rounds x {args.pairs} pairs")
        for name, values in times.items():
            low, high = min(values) * 1e6, max(values) * 1e6
            median = statistics.median(values) * 1e6
            print(f"  {name:17} {median:7.2f} us per pair (min {low:.2f}, max {high:.2f})")
        print(
            f"  ratio (median of the rounds'): {statistics.median(ratios):.3f}x "
            f"(rounds {min(ratios):.3f}-{max(ratios):.3f}), {extra * 1e6:+.2f} us per connect+accept pair"
        )
        if run.run_cnt:
            per_run = run.run_time_ns / run.run_cnt
            per_pair = run.run_time_ns / args.pairs
            print(
                f"  in the kernel: {per_run:.0f} ns per run of the program ({run.run_cnt} runs: every "
                f"sock_ops callback of {args.pairs} pairs), {per_pair / 1000:.2f} us per pair"
            )
        counters = final.counters
        print(f"  program counters: {counters.handled} handled, {counters.applied} applied (of {expected})")
        return 0 if counters.handled == counters.applied == expected else 1
    finally:
        join(home.directory)
        leftover = None
        if mounted and (top / "guarded").exists():
            leftover = ka.guard.status(top / "guarded", bpffs=bpffs)
        if leftover is not None:
            ka.guard.detach(cgroup_id=leftover.cgroup_id, bpffs=bpffs)
        if mounted:
            subprocess.run(["umount", str(bpffs)], check=False)
        bpffs.rmdir()
        for path in reversed(made):
            path.rmdir()


if __name__ == "__main__":
    sys.exit(main())
