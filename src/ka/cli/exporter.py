"""``ka exporter``: the keepalive state of live connections for Prometheus (Linux)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .. import live
from .audit import add_rule_arguments, rules_from
from .checks import EXIT_OK, EXIT_UNSUPPORTED, UsageError, parse_duration
from .filters import add_filters, add_process_selection, connection_filter, process_filter, states

EXAMPLES = (
    "ka exporter --listen 127.0.0.1:9977  # this user's processes, refreshed on each scrape",
    "sudo ka exporter --listen :9977 --all --interval 30s --max-detection 60s  # the host, with a rule",
)
MISSING = (
    "ka exporter needs prometheus-client, which is not installed: pip install 'ka[prometheus]' "
    "(or pip install prometheus-client)"
)


def listen_address(text: str) -> tuple[str, int]:
    """(host, port) from ``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (every address); a UsageError
    naming the value otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT, [IPV6]:PORT or :PORT with a port 1-65535")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], json_parent: argparse.ArgumentParser
) -> None:
    parser = sub.add_parser(
        "exporter",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="serve the keepalive state of live connections as Prometheus metrics (Linux)",
        description="Serve the Prometheus text format on --listen: connections per process and\n"
        "service port by keepalive state, a histogram of dead-peer detection times, audit\n"
        "violations per rule (when rules are given), the system defaults, and the exporter's own\n"
        "refresh time and errors (docs/audit.md lists every metric). Unprivileged it reads the\n"
        "user's own processes; as root (CAP_SYS_PTRACE), the host's. Needs prometheus-client.",
        epilog="examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES),
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1:9977",
        metavar="ADDR",
        help="HOST:PORT to serve on (default 127.0.0.1:9977)",
    )
    parser.add_argument(
        "--interval",
        metavar="DURATION",
        help="refresh in the background this often (default: on each scrape)",
    )
    parser.add_argument(
        "--source", choices=live.SOURCES, default="auto", help="where TCP tables come from (as ka audit)"
    )
    add_process_selection(parser, "the default: every process you may see")
    add_filters(parser, "connected")
    add_rule_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    host, port = listen_address(args.listen)
    interval = None if args.interval is None else parse_duration(args.interval, "--interval")
    if interval is not None and interval <= 0:
        raise UsageError(f"--interval {args.interval}: expected a positive duration")
    rules = rules_from(args)
    connections = connection_filter(args, states(args.state, "connected"))
    live.check_platform()
    processes = process_filter(args)
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:
        print(MISSING, file=sys.stderr)
        return EXIT_UNSUPPORTED
    from ..audit.metrics import Collector

    collector = Collector(rules, processes, connections, interval=interval, source=args.source)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    # Served first: an address it cannot serve on is told before any process is read.
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:  # a name that does not resolve, a port in use, an address not here
        raise UsageError(f"--listen {args.listen!r}: cannot serve there: {exc.strerror or exc}") from None
    if interval is not None:
        collector.start()
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    print(f"ka exporter: serving http://{args.listen}/metrics", file=sys.stderr, flush=True)
    stop.wait()
    server.shutdown()
    thread.join()
    collector.stop()
    return EXIT_OK
