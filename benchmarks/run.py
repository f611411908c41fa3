"""The full benchmark sweep: pools of 1k, 4k and 16k live connections, every method, a thread
sweep, the server path with system calls counted, and the table, JSON and PNG plots.

    python benchmarks/run.py [--out bench-results] [any `ka bench` option]

It is the harness behind `python -m ka bench` (src/ka/bench/harness.py) with bigger defaults.
"""

from __future__ import annotations

import argparse
import os
import sys

from ka.bench import harness


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="bench-results", help="directory for results.json and the plots")
    harness.add_arguments(parser)
    parser.set_defaults(
        sizes="1000,4000,16000", rounds=31, thread_sweep="1,2,3,4", server_n=2000, syscalls=True
    )
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.json is None:
        args.json = os.path.join(args.out, "results.json")
    if args.plots is None:
        args.plots = args.out
    return harness.run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
