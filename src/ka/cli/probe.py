"""``ka probe HOST:PORT``: the path's idle timeout, how it drops a flow, whether keepalive probes
keep it open, and the policy it needs; ``ka probe --serve PORT`` is a far end for it."""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

from .. import probe
from ..probe.plan import Progress
from .checks import EXIT_INTERRUPTED, EXIT_OK, UsageError, parse_duration, validated
from .format import print_json

EXAMPLES: tuple[str, ...] = (
    "ka probe 10.0.0.7:6379                  # the path's idle timeout, how it dies, the policy it needs",
    "ka probe db.internal:5432 --max 10m --json  # the same for a script: one JSON object",
    "ka probe --serve 7000                   # on the far end: hold idle connections open, send nothing",
)

_DESCRIPTION = """\
Measure how long the path to HOST:PORT keeps an idle TCP connection: NAT gateways, load
balancers, firewalls and proxies forget idle flows after some minutes, often silently. ka opens
connections to any service that keeps idle connections open (redis, postgres, an HTTP server
with keep-alive, or `ka probe --serve PORT` on the far end), leaves them idle for staggered
times and tests each with a keepalive probe; a few connections carry a probe every second.
No payload is sent unless --payload allows it; no privilege is needed (Linux).

It reports the idle timeout (within --precision, in about 1.1-1.3 times the timeout), how the
flow dies (silently, a reset, a FIN), whether keepalive probes keep it open, and the policy
for KA_POLICY, or the heartbeat interval an application must keep where probes do not help.
Ctrl-C prints what is known so far (exit code 130)."""


def register(sub: Any, json_parent: argparse.ArgumentParser) -> None:
    """The ``probe`` subcommand, its flags and help."""
    parser = sub.add_parser(
        "probe",
        parents=[json_parent],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="measure the path's idle timeout and whether keepalive keeps it open; the policy it needs",
        description=_DESCRIPTION,
        epilog="examples:\n" + "\n".join(f"  {example}" for example in EXAMPLES),
    )
    parser.add_argument(
        "target", nargs="?", metavar="HOST:PORT", help="a TCP service that keeps idle connections"
    )
    parser.add_argument(
        "--max",
        default="15m",
        metavar="DURATION",
        help="the longest silence tested (default 15m); a longer timeout is reported as none",
    )
    parser.add_argument(
        "--precision",
        default="5s,5%",
        metavar="SECONDS,PERCENT",
        help="how close the timeout must be: seconds and/or a percentage, whichever is larger "
        "(default 5s,5%%)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=24,
        metavar="N",
        help="connections open at once (default 24; fewer make a longer run)",
    )
    parser.add_argument(
        "--payload",
        metavar="TEXT",
        help="allow payload: one connection sends TEXT (escapes such as \\r\\n understood) every second, "
        "to tell whether an application heartbeat keeps the path open (e.g. 'PING\\r\\n' for redis)",
    )
    parser.add_argument(
        "--serve", type=int, metavar="PORT", help="be the far end instead: hold idle connections on PORT"
    )
    parser.add_argument(
        "--bind", metavar="ADDR", help="with --serve: the address to listen on (default: all)"
    )
    parser.add_argument(
        "--hold",
        metavar="DURATION",
        help="with --serve: close a connection after this long without payload (default 2h; the far "
        "ends of flows a middlebox forgot are never told)",
    )
    parser.set_defaults(func=run)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the probe as Ctrl-C does: connections closed, what is known printed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _ProgressLine:
    """One line on stderr, rewritten at most four times a second (a terminal only)."""

    def __init__(self) -> None:
        self.shown = -1.0
        self.width = 0

    def __call__(self, progress: Progress) -> None:
        if progress.elapsed - self.shown < 0.25:
            return
        self.shown = progress.elapsed
        left = "" if progress.left is None else f"; at most {progress.left:.0f} s left"
        text = f"{progress.elapsed:5.0f} s  waiting for {progress.waiting_for}{left}"
        sys.stderr.write("\r" + text.ljust(self.width))
        sys.stderr.flush()
        self.width = len(text)

    def clear(self) -> None:
        if self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()


def _payload(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        data = text.encode("utf-8").decode("unicode_escape").encode("latin-1")
    except (UnicodeDecodeError, UnicodeEncodeError) as exc:
        raise UsageError(f"--payload {text!r}: {exc.reason}") from None
    if not data:
        raise UsageError("--payload is empty: give the bytes to send, such as 'PING\\r\\n'")
    return data


def _serve(args: argparse.Namespace) -> int:
    if args.target is not None:
        raise UsageError("--serve makes this the far end: give a PORT to --serve, not a HOST:PORT target")
    hold = parse_duration(args.hold, "--hold") if args.hold is not None else probe.HOLD
    if hold <= 0:
        raise UsageError(f"--hold must be a positive duration, not {args.hold!r}")
    try:
        sock = validated(probe.listener, args.serve, args.bind)
    except OSError as exc:  # a port in use, an address not of this host, a name that does not resolve
        where = f"--serve {args.serve}" + (f" --bind {args.bind}" if args.bind is not None else "")
        raise UsageError(f"{where}: cannot listen there: {exc.strerror or exc}") from None
    host, port = sock.getsockname()[:2]
    print(
        f"ka probe --serve: holding idle connections on {host}:{port} (nothing is sent; Ctrl-C stops)",
        flush=True,
    )
    with _terminate_as_interrupt(), sock, contextlib.suppress(KeyboardInterrupt):
        probe.serve(sock, hold=hold)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    if args.serve is not None:
        return _serve(args)
    if args.target is None:
        raise UsageError("give the HOST:PORT of a service that keeps idle connections open (or --serve PORT)")
    if args.bind is not None or args.hold is not None:
        raise UsageError("--bind and --hold go with --serve")
    longest = parse_duration(args.max, "--max")
    precision = validated(probe.Precision.parse, args.precision)
    payload = _payload(args.payload)
    show = _ProgressLine() if sys.stderr.isatty() else None
    code = EXIT_OK
    try:
        with _terminate_as_interrupt():
            result = validated(
                lambda: probe.measure(
                    args.target,
                    max=longest,
                    precision=precision,
                    connections=args.connections,
                    payload=payload,
                    progress=show,
                ),
            )
    except probe.Interrupted as exc:
        result, code = exc.result, EXIT_INTERRUPTED
    except socket.gaierror as exc:
        raise UsageError(str(exc.strerror)) from None
    finally:
        if show is not None:
            show.clear()
    if args.json:
        print_json(result.as_json())
    else:
        print("\n".join(result.report()))
    return code
