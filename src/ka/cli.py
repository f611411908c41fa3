"""The ``ka`` command (also ``python -m ka``).

Exit codes: 0 success, 1 some sockets failed or a check did not hold, 2 bad usage or input,
3 missing permission, 4 not supported on this platform.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PERMISSION = 3
EXIT_UNSUPPORTED = 4


def _bench(args: argparse.Namespace) -> int:
    from .bench.harness import run_cli

    return run_cli(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ka",
        description="TCP keepalive for one socket or a whole pool: see, set and measure it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    from .bench.harness import add_arguments as add_bench_arguments

    bench = sub.add_parser(
        "bench",
        help="compare a plain setsockopt loop with ka on a pool of live loopback connections",
        description="Compare a plain socket.setsockopt loop with ka.apply_many (and more) on pools "
        "of established loopback TCP connections; prints ns per socket and ratios.",
    )
    add_bench_arguments(bench)
    bench.set_defaults(func=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
