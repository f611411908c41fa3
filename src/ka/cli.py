"""The ``ka`` command (also ``python -m ka``).

Subcommands: ``defaults`` (the system's keepalive sysctls, and setting them), ``show`` (the
keepalive state of a running process's TCP connections), ``apply`` (changing it in place),
``bench`` (the benchmark). ``--json`` on defaults, show and apply prints one JSON object on stdout
instead of text; with ``--json`` anywhere in the arguments every error, usage errors included,
comes as ``{"error": {"message": ..., "exit_code": ...}}`` on stdout (and as text on stderr).

Exit codes: 0 success, 1 some sockets failed or a check did not hold (apply: a connection failed,
or none matched the filters), 2 bad usage or input (argument values, a process that does not
exist), 3 missing permission (ptrace over the process, root for ``defaults --set``), 4 not
supported on this platform.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import ka

from . import _durations as durations
from . import live
from ._options import PLATFORM
from .system import set_system_defaults

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PERMISSION = 3
EXIT_UNSUPPORTED = 4


class UsageError(ValueError):
    """A command-line value that makes no sense; exit code 2."""


class _ArgumentError(Exception):
    """argparse's own usage error, raised instead of exiting so ``main`` can report it as JSON."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser (subcommand parsers are made of the same class) whose usage errors
    are raised as ``_ArgumentError``, not printed and exited on."""

    def error(self, message: str) -> NoReturn:
        raise _ArgumentError(self, message)


def parse_duration(text: str, name: str) -> float:
    """Seconds from ``60``, ``1.5``, ``90s``, ``2m``, ``1h30m``, ``500ms`` (a bare number is seconds)."""
    try:
        return durations.parse_duration(text, name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _seconds(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def human(seconds: float) -> str:
    """``7875`` -> ``2 h 11 min 15 s``; ``1.5`` -> ``1.5 s``."""
    if seconds < 60:
        return f"{seconds:g} s"
    whole = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if whole >= size:
            parts.append(f"{whole // size} {unit}")
            whole %= size
    return " ".join(parts)


def compact(seconds: float | None) -> str:
    """A short duration for tables: ``2h11m``, ``1m50s``, ``55s``; ``-`` for None."""
    if seconds is None:
        return "-"
    text = human(seconds).replace(" min", "m").replace(" ", "")
    return text


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# -- defaults ------------------------------------------------------------------------------------

_SET_KEYS = {
    "idle": "idle",
    "time": "idle",
    "tcp_keepalive_time": "idle",
    "interval": "interval",
    "intvl": "interval",
    "tcp_keepalive_intvl": "interval",
    "count": "count",
    "probes": "count",
    "tcp_keepalive_probes": "count",
}


def _parse_set(pairs: Sequence[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        field = _SET_KEYS.get(key.strip().lower())
        if not sep or field is None:
            raise UsageError(f"--set takes KEY=VALUE with KEY one of idle, interval, count; got {pair!r}")
        if field in values:
            raise UsageError(f"--set names {field} twice")
        if field == "count":
            try:
                values[field] = int(value)
            except ValueError:
                raise UsageError(f"count {value!r} is not a whole number of probes") from None
        else:
            values[field] = _seconds(parse_duration(value, field))
    return values


def _defaults_data(defaults: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "platform": PLATFORM,
        "idle": defaults.idle,
        "interval": defaults.interval,
        "count": defaults.count,
        "detection_time": defaults.detection_time,
        "source": defaults.source,
        "description": f"a dead peer is found after {human(defaults.detection_time)}",
    }
    if PLATFORM == "linux":
        data["network_namespace"] = live.netns_name()
    return data


def _print_defaults(data: dict[str, Any], heading: str) -> None:
    idle, interval, count = data["idle"], data["interval"], data["count"]
    where = f", network namespace {data['network_namespace']}" if "network_namespace" in data else ""
    print(f"{heading} ({data['source']}{where}):")
    if data["platform"] == "linux":
        names = (
            "net.ipv4.tcp_keepalive_time",
            "net.ipv4.tcp_keepalive_intvl",
            "net.ipv4.tcp_keepalive_probes",
        )
    else:
        names = ("idle", "interval", "count")
    width = max(len(n) for n in names)
    print(f"  {names[0]:<{width}} = {idle:<6} first probe after {human(idle)} of silence")
    print(f"  {names[1]:<{width}} = {interval:<6} then one probe every {human(interval)}")
    print(f"  {names[2]:<{width}} = {count:<6} the connection is dropped after {count} unanswered probes")
    print(
        f"A dead peer is found after {human(data['detection_time'])} "
        f"({idle} + {interval} x {count} = {data['detection_time']} s) on a socket that turns keepalive "
        "on and sets nothing else.\nKeepalive stays off unless a program turns it on (SO_KEEPALIVE)."
    )


def _defaults(args: argparse.Namespace) -> int:
    if args.set:
        values = _parse_set(args.set)
        _validated(lambda: ka.KeepAlive(**values))  # every value checked before anything is written
        defaults = set_system_defaults(**values)
        heading = "System keepalive defaults now"
    else:
        defaults = ka.system_defaults()
        heading = "System keepalive defaults"
    data = _defaults_data(defaults)
    if args.json:
        _print_json(data)
    else:
        _print_defaults(data, heading)
    return EXIT_OK


# -- show and apply: shared ----------------------------------------------------------------------


def _endpoint_data(endpoint: Any) -> dict[str, Any]:
    return {"address": endpoint.address, "port": endpoint.port}


def _timer_data(timer: Any) -> dict[str, Any]:
    return {
        "name": timer.name,
        "expires": timer.expires,
        "probes": timer.probes,
        "retransmits": timer.retransmits,
    }


def _settings_data(settings: Any) -> dict[str, Any] | None:
    if settings is None:
        return None
    return {
        "enabled": settings.enabled,
        "idle": settings.idle,
        "interval": settings.interval,
        "count": settings.count,
        "user_timeout": settings.user_timeout,
        "dead_peer_after": live.dead_peer_after(settings),
    }


def _connection_data(conn: Any) -> dict[str, Any]:
    return {
        "fd": conn.fd,
        "inode": conn.inode,
        "family": conn.family,
        "local": _endpoint_data(conn.local),
        "remote": _endpoint_data(conn.remote),
        "state": conn.state,
    }


def _settings_text(settings: Any) -> str:
    if settings is None:
        return "?"
    values = "/".join(
        "?" if v is None else str(v) for v in (settings.idle, settings.interval, settings.count)
    )
    text = f"{'on' if settings.enabled else 'off'} {values}"
    if settings.user_timeout:
        text += f" ut={compact(settings.user_timeout)}"
    return text


def _timer_text(timer: Any) -> str:
    if timer.name == "none":
        return "-"
    # Whole seconds like ss, except below 10 s where a tenth tells more.
    expires = compact(round(timer.expires) if timer.expires >= 10 else round(timer.expires, 1))
    if timer.name == "keepalive":
        return f"keepalive {expires} ({timer.probes} sent)"
    return f"{timer.name} {expires}"


def _states(values: Sequence[str] | None, default: str | None) -> frozenset[str] | None:
    names = [part for value in (values or []) for part in value.split(",") if part.strip()]
    if not names:
        return None if default is None else live.normalize_states([default])
    try:
        return live.normalize_states(names)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _check_pid(pid: int) -> None:
    if pid <= 0:
        raise UsageError(f"--pid {pid} is not a process id: expected a positive number")
    group = live.thread_group(pid)
    if group is None:
        raise UsageError(f"there is no process {pid}")
    if group != pid:
        raise UsageError(f"--pid {pid} is a thread of process {group}, not a process: use --pid {group}")


def _filters_text(args: argparse.Namespace, states: frozenset[str] | None) -> str:
    parts = []
    if args.local_port is not None:
        parts.append(f"local port {args.local_port}")
    if args.remote_port is not None:
        parts.append(f"remote port {args.remote_port}")
    if states is not None:
        parts.append("state " + ",".join(args.state) if args.state else "every state but listen")
    return ", ".join(parts)


def _select(args: argparse.Namespace, conns: Sequence[Any], states: frozenset[str] | None) -> list[Any]:
    return live.select(conns, local_port=args.local_port, remote_port=args.remote_port, states=states)


def _check_ports(args: argparse.Namespace) -> None:
    # Here rather than in the argparse type: the message names the flag, and --json reports it.
    for name in ("local_port", "remote_port"):
        value = getattr(args, name)
        if value is not None and not 0 < value < 65536:
            raise UsageError(f"--{name.replace('_', '-')} {value} is not a TCP port: expected 1 to 65535")


# -- show ----------------------------------------------------------------------------------------

_SHOW_HEADERS = (
    "FD",
    "LOCAL",
    "REMOTE",
    "STATE",
    "KEEPALIVE",
    "IDLE",
    "INTVL",
    "CNT",
    "USER-TO",
    "DEAD PEER",
    "TIMER",
)


def _show_row(state: Any) -> list[str]:
    conn, s = state.connection, state.settings
    if s is None:
        cells = ["?", "?", "?", "?", "?", state.error or "?"]
    else:
        cells = [
            "on" if s.enabled else "off",
            "?" if s.idle is None else str(s.idle),
            "?" if s.interval is None else str(s.interval),
            "?" if s.count is None else str(s.count),
            compact(s.user_timeout) if s.user_timeout else "-",
            compact(live.dead_peer_after(s)),
        ]
    return [str(conn.fd), str(conn.local), str(conn.remote), conn.state, *cells, _timer_text(conn.timer)]


def _process_block(pid: int, states: Sequence[Any]) -> str:
    owner = live.process_owner(pid)
    head = (
        f"process {pid} ({live.command_name(pid)}, uid {owner}, {live.netns_name(pid)}): "
        f"{len(states)} TCP connection{'s' if len(states) != 1 else ''}"
    )
    rows = [_show_row(s) for s in states]
    return head + "\n" + _table(_SHOW_HEADERS, rows, right={0, 5, 6, 7, 8, 9})


def _process_data(pid: int, states: Sequence[Any]) -> dict[str, Any]:
    return {
        "pid": pid,
        "command": live.command_name(pid),
        "uid": live.process_owner(pid),
        "network_namespace": live.netns_name(pid),
        "connections": [
            {
                **_connection_data(s.connection),
                "keepalive": _settings_data(s.settings),
                "timer": _timer_data(s.connection.timer),
                "error": s.error,
            }
            for s in states
        ],
    }


def _show(args: argparse.Namespace) -> int:
    _check_ports(args)
    states = _states(args.state, None)
    live._check_platform()
    if args.pid is not None:
        _check_pid(args.pid)
        conns = _select(args, live.connections(args.pid), states)
        shown = live.read(args.pid, conns)
        if args.json:
            _print_json({"processes": [_process_data(args.pid, shown)], "skipped": []})
        elif shown:
            print(_process_block(args.pid, shown))
        else:
            name = live.command_name(args.pid)
            print(f"process {args.pid} ({name}) holds no TCP connection{_matching(args, states)}.")
        return EXIT_OK

    found: list[tuple[int, list[Any]]] = []
    skipped: list[dict[str, Any]] = []
    tables: dict[int, dict[int, live.TcpEntry]] = {}
    me = os.getpid()
    for pid in live.process_ids():
        if pid == me:
            continue
        try:
            conns = _select(args, live.connections(pid, tables), states)
            if conns:
                found.append((pid, live.read(pid, conns)))
        except live.NotPermitted:
            skipped.append({"pid": pid, "command": live.command_name(pid), "reason": "no ptrace permission"})
        except (ProcessLookupError, FileNotFoundError):
            continue  # exited while we looked
        except OSError as exc:  # one process's trouble does not end the listing
            skipped.append({"pid": pid, "command": live.command_name(pid), "reason": str(exc)})
    if args.json:
        _print_json({"processes": [_process_data(pid, s) for pid, s in found], "skipped": skipped})
        return EXIT_OK
    if found:
        print("\n\n".join(_process_block(pid, s) for pid, s in found))
    else:
        print(f"no process this user may see holds a TCP connection{_matching(args, states)}.")
    if skipped:
        pids = ", ".join(str(s["pid"]) for s in skipped[:10]) + (" ..." if len(skipped) > 10 else "")
        print(
            f"\nnote: {len(skipped)} process{'es' if len(skipped) != 1 else ''} skipped, most without ptrace "
            f"permission ({pids}): run as their user, or as root, to see them.",
            file=sys.stderr,
        )
    return EXIT_OK


def _matching(args: argparse.Namespace, states: frozenset[str] | None) -> str:
    text = _filters_text(args, states)
    return f" matching {text}" if text else ""


# -- apply ---------------------------------------------------------------------------------------


def _policy(args: argparse.Namespace) -> Any:
    """The policy from --idle/--interval/--count/--user-timeout/--off, or --policy, or KA_POLICY."""
    given = [args.idle, args.interval, args.count, args.user_timeout]
    flags = args.off or any(v is not None for v in given)
    if args.policy is not None:
        if flags:
            raise UsageError(
                "--policy gives the whole policy: use it or --idle/--interval/--count/--user-timeout/--off, "
                "not both"
            )
        return _validated(lambda: ka.KeepAlive.parse(args.policy))
    if not flags:
        if not os.environ.get("KA_POLICY", "").strip():
            what = "nothing to apply" if args.command == "apply" else "no policy"
            raise UsageError(
                f"{what}: give --idle, --interval, --count, --user-timeout, --off or --policy, "
                "or set KA_POLICY"
            )
        return _validated(lambda: ka.resolve_policy(None))
    if args.off and any(v is not None for v in given[:3]):
        raise UsageError("--off turns keepalive off: it takes no --idle, --interval or --count")
    idle = None if args.idle is None else _seconds(parse_duration(args.idle, "--idle"))
    interval = None if args.interval is None else _seconds(parse_duration(args.interval, "--interval"))
    user_timeout: Any = None
    if args.user_timeout is not None:
        text = args.user_timeout.strip().lower()
        user_timeout = "auto" if text == "auto" else _seconds(parse_duration(text, "--user-timeout"))
    if args.off:
        return _validated(lambda: ka.KeepAlive(enabled=False, user_timeout=user_timeout))
    return _validated(lambda: ka.KeepAlive(idle, interval, args.count, user_timeout=user_timeout))


def _add_policy_arguments(parser: argparse.ArgumentParser, title: str) -> None:
    values = parser.add_argument_group(title)
    values.add_argument("--idle", metavar="DURATION", help="silence before the first probe (TCP_KEEPIDLE)")
    values.add_argument("--interval", metavar="DURATION", help="time between probes (TCP_KEEPINTVL)")
    values.add_argument(
        "--count", type=int, metavar="N", help="unanswered probes before the drop (TCP_KEEPCNT)"
    )
    values.add_argument(
        "--user-timeout",
        metavar="DURATION",
        help="TCP_USER_TIMEOUT: 'auto' (idle + interval x count), 0 (the system's), or a duration",
    )
    values.add_argument("--off", action="store_true", help="turn keepalive off instead")
    values.add_argument(
        "--policy",
        metavar="TEXT",
        help="the whole policy in one string: 'idle=60 interval=10 count=5', 'within=30s', 'off' "
        "(default: the KA_POLICY environment variable when no value is given)",
    )


def _validated(build: Any) -> Any:
    """The policy ``build()`` makes; its ValueError/TypeError (a bad value) as a UsageError."""
    try:
        return build()
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None


def _change_data(change: Any) -> dict[str, Any]:
    return {
        **_connection_data(change.connection),
        "status": change.status,
        "before": _settings_data(change.before),
        "after": _settings_data(change.after),
        "timer": _timer_data(change.timer),
        "error": change.error,
        "errno": change.errno or None,
        "option": change.option,
    }


def _apply(args: argparse.Namespace) -> int:
    _check_ports(args)
    policy = _policy(args)  # every value checked before anything is touched
    states = _states(args.state, "connected")
    live._check_platform()
    _check_pid(args.pid)
    everything = live.connections(args.pid)
    conns = _select(args, everything, states)
    report = live.apply(args.pid, conns, policy, dry_run=args.dry_run)
    summary = {
        status: report.count(status)
        for status in (
            ("would change", "already set", "gone", "failed")
            if args.dry_run
            else ("applied", "failed", "gone")
        )
    }
    code = EXIT_OK if report.ok and conns else EXIT_FAILED
    if args.json:
        _print_json(
            {
                "pid": args.pid,
                "command": live.command_name(args.pid),
                "policy": policy.as_dict(),
                "dry_run": args.dry_run,
                "filters": _filters_text(args, states),
                "tcp_connections": len(everything),
                "matched": len(conns),
                "summary": summary,
                "connections": [_change_data(c) for c in report.changes],
                "exit_code": code,
            }
        )
        return code
    name = live.command_name(args.pid)
    print(
        f"process {args.pid} ({name}): {len(conns)} of {len(everything)} TCP connections match "
        f"({_filters_text(args, states)}); policy {policy!r}"
        + (" -- dry run, nothing is changed" if args.dry_run else "")
    )
    if not conns:
        print("nothing matched: no connection was changed.", file=sys.stderr)
        return code
    rows = []
    for c in report.changes:
        conn = c.connection
        result = c.status if c.error is None else f"{c.status}: {c.error}"
        rows.append(
            [
                str(conn.fd),
                str(conn.local),
                str(conn.remote),
                conn.state,
                _settings_text(c.before),
                _settings_text(c.after),
                _timer_text(c.timer),
                result,
            ]
        )
    after = "WOULD BE" if args.dry_run else "AFTER"
    print(_table(("FD", "LOCAL", "REMOTE", "STATE", "BEFORE", after, "TIMER", "RESULT"), rows, right={0}))
    print(", ".join(f"{n} {status}" for status, n in summary.items()) + ".")
    found_after = {
        live.dead_peer_after(c.after) for c in report.changes if c.after is not None and c.status != "failed"
    }
    if len(found_after) == 1 and None not in found_after:
        (seconds,) = found_after
        verb = "would be" if args.dry_run else "is now"
        print(f"A silent dead peer {verb} found after {human(seconds or 0)} on these connections.")
    return code


# -- listen --------------------------------------------------------------------------------------


def _listen(args: argparse.Namespace) -> int:
    from . import listen as listen_module

    try:
        before, args.program = listen_module.split_command(args.rest)
        # Options may come after the addresses too: read that part again, addresses and options.
        again = argparse.ArgumentParser(prog="ka listen", add_help=False)
        _add_policy_arguments(again, "policy")
        listen_module.add_arguments(again)
        again.add_argument("addresses", nargs="+", metavar="ADDR")
        again.parse_args(before, namespace=args)
        policy = _policy(args)
        return listen_module.run(args, policy)
    except listen_module.ListenError as exc:
        raise UsageError(str(exc)) from None


# -- parser --------------------------------------------------------------------------------------


def _bench(args: argparse.Namespace) -> int:
    from .bench.harness import run_cli

    return run_cli(args)


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


def _json_parent() -> _Parser:
    parent = _Parser(add_help=False)
    parent.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parent


def _port(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None


def _add_filters(parser: argparse.ArgumentParser, default_state: str) -> None:
    group = parser.add_argument_group("filters (all given must hold)")
    group.add_argument("--local-port", type=_port, metavar="N", help="only connections with this local port")
    group.add_argument(
        "--remote-port", type=_port, metavar="N", help="only connections with this remote port"
    )
    group.add_argument(
        "--state",
        action="append",
        metavar="STATE",
        help="only these TCP states, as ss names them (established, close-wait, listen, ...), "
        f"comma-separated or repeated; 'connected' is every state but listen, 'all' every one "
        f"(default: {default_state})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    defaults.set_defaults(func=_defaults)

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
    _add_filters(show, "all")
    show.set_defaults(func=_show)

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
    _add_policy_arguments(apply, "the policy (at least one, or KA_POLICY; values left out stay as they are)")
    _add_filters(apply, "connected")
    apply.add_argument(
        "--dry-run", action="store_true", help="read and show what would change; change nothing"
    )
    apply.set_defaults(func=_apply)

    from . import listen as listen_module

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
    _add_policy_arguments(listen, "the policy (or KA_POLICY)")
    listen_module.add_arguments(listen)
    listen.add_argument(
        "rest", nargs=argparse.REMAINDER, metavar="ADDR ... -- COMMAND ...", help=argparse.SUPPRESS
    )
    listen.set_defaults(func=_listen)

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


def _fail(args: argparse.Namespace, code: int, message: str) -> int:
    if getattr(args, "json", False):
        _print_json({"error": {"message": message, "exit_code": code}})
    print(f"ka {args.command}: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _ArgumentError as exc:
        if "--json" in argv:
            _print_json({"error": {"message": exc.message, "exit_code": EXIT_USAGE}})
        exc.parser.print_usage(sys.stderr)
        print(f"{exc.parser.prog}: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return _fail(args, 130, "interrupted")
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
        return _fail(args, EXIT_FAILED, str(exc))
    except Exception as exc:
        if not getattr(args, "json", False):
            raise  # a bug: the traceback says where
        return _fail(args, EXIT_FAILED, f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
