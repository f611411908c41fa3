"""The ka command's argument parser: the top level, and one registration per command.

Each command lives in its own module with ``register(sub, json_parent)`` (its subparser, flags,
help, epilog and ``set_defaults(func=run)``) and ``EXAMPLES`` (one-line examples, ``ka ...  # what
it does``). ``ka --help`` ends with every command's examples, so adding a command is two lines
here: its import and its entry in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn, Protocol, cast

from . import apply as apply_command
from . import audit as audit_command
from . import bench as bench_command
from . import completion as completion_command
from . import defaults as defaults_command
from . import exporter as exporter_command
from . import guard as guard_command
from . import listen as listen_command
from . import probe as probe_command
from . import show as show_command
from .checks import EXIT_CODES

__all__ = ["COMMANDS", "ArgumentError", "Command", "Parser", "build_parser", "examples_text"]


class Command(Protocol):
    """What a command module provides (a module satisfies this protocol)."""

    @property
    def EXAMPLES(self) -> tuple[str, ...]: ...

    def register(
        self, sub: argparse._SubParsersAction[argparse.ArgumentParser], json_parent: argparse.ArgumentParser
    ) -> None: ...


# In the order ``ka --help`` lists them.
COMMANDS: tuple[Command, ...] = (
    defaults_command,
    show_command,
    apply_command,
    listen_command,
    probe_command,
    audit_command,
    exporter_command,
    guard_command,
    bench_command,
    completion_command,
)


class ArgumentError(Exception):
    """argparse's own usage error, raised instead of exiting so ``main`` can report it as JSON."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class Parser(argparse.ArgumentParser):
    """An ArgumentParser (subcommand parsers are made of the same class) whose usage errors
    are raised as ``ArgumentError``, not printed and exited on."""

    def error(self, message: str) -> NoReturn:
        raise ArgumentError(self, message)


_COMMENT = "  # "
_COMMAND_WIDTH = 44  # a longer example has its comment on the next line, in the same column


def examples_text(examples: Sequence[str]) -> str:
    """``examples:`` and the lines, their ``# ...`` comments lined up in one column."""
    split = [line.partition(_COMMENT) for line in examples]
    width = max((len(command) for command, _, _ in split if len(command) <= _COMMAND_WIDTH), default=0)
    lines = ["examples:"]
    for command, sep, comment in split:
        if not sep:
            lines.append(f"  {command}")
        elif len(command) <= width:
            lines.append(f"  {command.ljust(width)}  # {comment}")
        else:
            lines += [f"  {command}", f"  {' ' * width}  # {comment}"]
    return "\n".join(lines)


def _exit_codes_text() -> str:
    return "exit codes: " + ", ".join(f"{code} {reason}" for code, reason in EXIT_CODES.items()) + "."


def _version() -> str:
    import ka

    core = "compiled" if ka.IMPLEMENTATION == "c" else "pure-Python"
    return f"ka {ka.__version__} ({core} core, Python {sys.version.split()[0]}, {sys.platform})"


def _json_parent() -> Parser:
    parent = Parser(add_help=False)
    parent.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The whole parser: the top level and every command of ``COMMANDS``."""
    import textwrap

    every_example = [line for command in COMMANDS for line in command.EXAMPLES]
    exit_codes = textwrap.fill(_exit_codes_text(), width=100, subsequent_indent="  ")
    parser = Parser(
        prog="ka",
        description="TCP keepalive for one socket or a whole pool: see, set and measure it. "
        "Durations are seconds, or a number with a unit: 500ms, 90s, 2m, 1h30m. "
        "'ka COMMAND --help' tells more about each.",
        epilog=f"{examples_text(every_example)}\n\n{exit_codes}\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour in text output (default auto: on a terminal, unless NO_COLOR is set; "
        "FORCE_COLOR forces it)",
    )
    # Typed as argparse's own (the subparsers are Parser instances, which the class argument makes).
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser),
    )
    json_parent = _json_parent()
    for command in COMMANDS:
        command.register(sub, json_parent)
    parser.set_defaults(root_parser=parser)  # for commands that read the whole tree (completion)
    return parser
