"""The ``ka`` command (also ``python -m ka``).

Subcommands: ``defaults`` (the system's keepalive sysctls, and setting them), ``show`` (the
keepalive state of a running process's TCP connections), ``apply`` (changing it in place),
``listen`` (socket activation with a policy), ``bench`` (the benchmark), ``completion`` (shell
completion scripts). ``--json`` on defaults, show and apply prints one JSON object on stdout
instead of text; with ``--json`` anywhere in the arguments every error, usage errors included,
comes as ``{"error": {"message": ..., "exit_code": ...}}`` on stdout (and as text on stderr).
``ka`` alone prints the help; ``ka --version`` the version.

Exit codes (``checks.EXIT_CODES``): 0 success, 1 some sockets failed or a check did not hold
(apply: a connection failed, or none matched the filters), 2 bad usage or input (argument values,
a process that does not exist), 3 missing permission (ptrace over the process, root for
``defaults --set``), 4 not supported on this platform, 5 the sysctls are on a read-only file
system (a container's ``/proc/sys``).

The modules: ``parser`` (the top level and the list of commands), ``checks`` (exit codes, usage
errors), ``filters`` and ``policy_args`` (flags shared by commands), ``format`` (text, colour,
tables and JSON), and one module per command with its ``register`` and ``EXAMPLES``:
``defaults``, ``show``, ``apply``, ``listen``, ``bench``, ``completion``. ``main`` runs a command
line and returns its exit code.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence

from .checks import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PERMISSION,
    EXIT_READ_ONLY,
    EXIT_UNSUPPORTED,
    EXIT_USAGE,
    UsageError,
    parse_duration,
)
from .format import colour_wanted, compact, human, print_json, use_colour
from .parser import ArgumentError, build_parser

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PERMISSION",
    "EXIT_READ_ONLY",
    "EXIT_UNSUPPORTED",
    "EXIT_USAGE",
    "UsageError",
    "build_parser",
    "compact",
    "human",
    "main",
    "parse_duration",
]


def _fail(args: argparse.Namespace, code: int, message: str) -> int:
    if getattr(args, "json", False):
        print_json({"error": {"message": message, "exit_code": code}})
    print(f"ka {args.command}: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ka command with these arguments (default: the process's) and return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except ArgumentError as exc:
        if "--json" in argv:
            print_json({"error": {"message": exc.message, "exit_code": EXIT_USAGE}})
        exc.parser.print_usage(sys.stderr)
        print(f"{exc.parser.prog}: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    if args.command is None:  # ka alone: what it can do, not a usage error
        parser.print_help()
        return EXIT_OK
    use_colour(colour_wanted(args.color, sys.stdout))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return _fail(args, EXIT_INTERRUPTED, "interrupted")
    except BrokenPipeError:
        return EXIT_OK
    except UsageError as exc:
        return _fail(args, EXIT_USAGE, str(exc))
    except PermissionError as exc:
        return _fail(args, EXIT_PERMISSION, exc.strerror or str(exc))
    except NotImplementedError as exc:
        return _fail(args, EXIT_UNSUPPORTED, str(exc))
    except ProcessLookupError as exc:  # gone before anything was done: as if it never existed
        return _fail(args, EXIT_USAGE, exc.strerror or str(exc))
    except OSError as exc:
        if exc.errno == errno.EROFS:
            return _fail(args, EXIT_READ_ONLY, exc.strerror or str(exc))
        return _fail(args, EXIT_FAILED, str(exc))
    except Exception as exc:
        if not getattr(args, "json", False):
            raise  # a bug: the traceback says where
        return _fail(args, EXIT_FAILED, f"{type(exc).__name__}: {exc}")
