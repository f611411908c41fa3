"""The ka command's argument parser: its subcommands, their flags and help."""

from __future__ import annotations

import argparse
from typing import NoReturn

from .apply import run as run_apply
from .defaults import run as run_defaults
from .filters import add_filters
from .guard import register as register_guard
from .listen import run as run_listen
from .policy_args import add_policy_arguments
from .show import run as run_show


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


_EPILOG = """\
examples:
  ka defaults                                  the three sysctls and what they mean
  sudo ka defaults --set idle=600 interval=30 count=4
  ka show --pid 1234                           keepalive of every TCP connection of process 1234
  ka show --state established --json           every process you may see, for scripts
  ka apply --pid 1234 --idle 60 --interval 10 --count 5 --user-timeout auto --local-port 8080
  ka apply --pid 1234 --idle 2m --interval 10s --count 3 --dry-run
  ka bench                                     ka against a plain setsockopt loop

exit codes: 0 ok, 1 a socket failed (or nothing matched), 2 bad usage or input,
3 missing permission, 4 not supported on this platform.
"""


def _json_parent() -> Parser:
    parent = Parser(add_help=False)
    parent.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ka",
        description="TCP keepalive for one socket or a whole pool: see, set and measure it. "
        "Durations are seconds, or a number with a unit: 500ms, 90s, 2m, 1h30m.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    json_parent = _json_parent()

    raw = argparse.RawDescriptionHelpFormatter
    defaults = sub.add_parser(
        "defaults",
        parents=[json_parent],
        formatter_class=raw,
        help="the system's keepalive defaults and what they mean; --set changes them (root)",
        description="Show the keepalive values a socket gets when nothing sets them (Linux:\n"
        "net.ipv4.tcp_keepalive_time/intvl/probes of this network namespace) and how long a\n"
        "dead peer then goes unnoticed. --set writes them: root or CAP_NET_ADMIN; all or none\n"
        "change.",
        epilog="examples:\n  ka defaults --json\n  sudo ka defaults --set idle=10m interval=30 count=4",
    )
    defaults.add_argument(
        "--set",
        nargs="+",
        metavar="KEY=VALUE",
        help="write idle=DURATION, interval=DURATION and/or count=N (keys may also be the "
        "sysctl names: time, intvl, probes)",
    )
    defaults.set_defaults(func=run_defaults)

    show = sub.add_parser(
        "show",
        parents=[json_parent],
        formatter_class=raw,
        help="the keepalive state of a running process's TCP connections (Linux)",
        description="List the TCP connections of a process (or of every process you may see)\n"
        "with their keepalive values, read from the live sockets through pidfd_getfd (Linux\n"
        "5.6+, ptrace permission), and the timer the kernel runs on each now (from\n"
        "/proc/PID/net/tcp, as ss -tno shows it). Processes you may not reach are skipped\n"
        "with a note.",
        epilog="examples:\n  ka show --pid 1234 --state established\n  sudo ka show --local-port 443 --json",
    )
    show.add_argument("--pid", type=int, help="this process only (default: every process you may see)")
    add_filters(show, "all")
    show.set_defaults(func=run_show)

    apply = sub.add_parser(
        "apply",
        parents=[json_parent],
        formatter_class=raw,
        help="change the keepalive of connections a running process holds, in place (Linux)",
        description="Set keepalive on the TCP connections a running, unmodified process holds:\n"
        "its descriptors are duplicated with pidfd_getfd (Linux 5.6+, ptrace permission), the\n"
        "options set on the shared sockets and read back. Every value is checked before\n"
        "anything is touched. Connections accepted later keep the listener's values unless\n"
        "the listener is changed too (--state listen): Linux copies them to new connections.",
        epilog="examples:\n"
        "  ka apply --pid 1234 --idle 60 --interval 10 --count 5 --user-timeout auto --dry-run\n"
        "  ka apply --pid 1234 --idle 2m --interval 10s --count 3 --local-port 8080\n"
        "  ka apply --pid 1234 --idle 60 --interval 10 --count 5 --state listen   (new connections)",
    )
    apply.add_argument("--pid", type=int, required=True, help="the process whose connections change")
    add_policy_arguments(apply, "the policy (at least one, or KA_POLICY; values left out stay as they are)")
    add_filters(apply, "connected")
    apply.add_argument(
        "--dry-run", action="store_true", help="read and show what would change; change nothing"
    )
    apply.set_defaults(func=run_apply)

    from .. import listen as listen_module

    listen = sub.add_parser(
        "listen",
        formatter_class=raw,
        usage="ka listen ADDR [ADDR ...] [policy] [options] -- COMMAND [ARGS ...]",
        help="make listening sockets with a keepalive policy and exec a server on them (socket activation)",
        description="Make each listening socket with the policy (bind, the policy, then listen), pass\n"
        "them to COMMAND as descriptors 3, 4, ... and exec it with the systemd socket-activation\n"
        "variables LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES (and KA_POLICY). On Linux and FreeBSD\n"
        "accepted sockets inherit the listener's keepalive options: the server needs nothing\n"
        "else. On macOS they do not (use the in-process glue, ka.integrations.*). Bad addresses,\n"
        "ports in use and bad policies end ka with exit code 2 before COMMAND starts.",
        epilog="examples:\n"
        '  KA_POLICY="idle=60 interval=10 count=5" ka listen 0.0.0.0:8000 -- gunicorn -w 2 app:app\n'
        "  ka listen 127.0.0.1:8000 --policy within=30s -- uvicorn --fd 3 app:app\n"
        "  ka listen [::]:8000 --idle 10m --interval 30s --count 4 -- hypercorn --bind fd://3 app:app",
    )
    add_policy_arguments(listen, "the policy (or KA_POLICY)")
    listen_module.add_arguments(listen)
    listen.add_argument(
        "rest", nargs=argparse.REMAINDER, metavar="ADDR ... -- COMMAND ...", help=argparse.SUPPRESS
    )
    listen.set_defaults(func=run_listen)

    register_guard(sub, json_parent)

    from ..bench.harness import add_arguments as add_bench_arguments
    from ..bench.harness import run_cli as run_bench

    bench = sub.add_parser(
        "bench",
        help="compare a plain setsockopt loop with ka on a pool of live loopback connections",
        description="Compare a plain socket.setsockopt loop with ka.apply_many (and more) on pools "
        "of established loopback TCP connections; prints ns per socket and ratios.",
    )
    add_bench_arguments(bench)
    bench.set_defaults(func=run_bench)
    return parser
