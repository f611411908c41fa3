"""``ka bench``: a plain setsockopt loop against ka on pools of live loopback connections
(the work is ``ka.bench``'s)."""

from __future__ import annotations

import argparse

EXAMPLES: tuple[str, ...] = (
    "ka bench  # ka against a plain setsockopt loop, ns per socket and ratios",
    "ka bench --sizes 1000 --rounds 5  # a quick run on one pool size",
)


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], json_parent: argparse.ArgumentParser
) -> None:
    from ..bench.harness import add_arguments

    bench = sub.add_parser(
        "bench",
        help="compare a plain setsockopt loop with ka on a pool of live loopback connections",
        description="Compare a plain socket.setsockopt loop with ka.apply_many (and more) on pools "
        "of established loopback TCP connections; prints ns per socket and ratios.",
    )
    add_arguments(bench)
    bench.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.harness import run_cli

    return run_cli(args)
