"""``ka defaults``: the system's keepalive sysctls and what they mean; ``--set`` writes them."""

from __future__ import annotations

import argparse
import errno
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import ka

from .. import live
from .._options import PLATFORM
from ..system import (
    LINUX_FILES,
    PERSIST_FILE,
    SystemDefaults,
    in_network_namespace,
    retransmission_timeout,
    set_system_defaults,
    tcp_retries2,
)
from .checks import EXIT_OK, UsageError, parse_duration, seconds, validated
from .format import human, paint, print_json

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), linux/nsfs.h

EXAMPLES: tuple[str, ...] = (
    "ka defaults  # the keepalive sysctls of this network namespace, in words",
    "sudo ka defaults --set idle=10m interval=30 count=4 --persist  # now, and after reboots",
    "sudo ka defaults --pid 4242 --k8s  # a container's values, as a pod's securityContext",
)

# Every name --set takes for each field: ka's, the sysctl file's (short and long), the sysctl's.
_FIELD_NAMES = {
    "idle": ("idle", "time"),
    "interval": ("interval", "intvl"),
    "count": ("count", "probes"),
}
SET_KEYS = {
    name: field
    for field, (ka_name, short) in _FIELD_NAMES.items()
    for name in (ka_name, short, LINUX_FILES[field], f"net.ipv4.{LINUX_FILES[field]}")
}
_KEYS_TEXT = ", ".join(
    f"{ka_name} ({short}, {LINUX_FILES[field]}, net.ipv4.{LINUX_FILES[field]})"
    for field, (ka_name, short) in _FIELD_NAMES.items()
)
SYSCTL_NAMES = {field: f"net.ipv4.{name}" for field, name in LINUX_FILES.items()}


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], json_parent: argparse.ArgumentParser
) -> None:
    defaults = sub.add_parser(
        "defaults",
        parents=[json_parent],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="the system's keepalive defaults and what they mean; --set changes them (root)",
        description="Show the keepalive values a socket gets when nothing sets them (Linux:\n"
        "net.ipv4.tcp_keepalive_time/intvl/probes of this network namespace, or of another\n"
        "with --pid/--netns), how long a dead peer then goes unnoticed, and tcp_retries2, which\n"
        "bounds a connection with unacknowledged data when no user timeout is set. --set writes\n"
        "them (root or CAP_NET_ADMIN; all or none change) until reboot; --persist also writes\n"
        f"{PERSIST_FILE} so they return at boot.",
        epilog="examples:\n"
        "  ka defaults --json\n"
        "  sudo ka defaults --set idle=10m interval=30 count=4\n"
        "  sudo ka defaults --set net.ipv4.tcp_keepalive_time=600 --persist\n"
        "  sudo ka defaults --netns blue --set idle=5m --k8s",
    )
    defaults.add_argument(
        "--set",
        nargs="+",
        metavar="KEY=VALUE",
        help=f"write the values; KEY is one of {_KEYS_TEXT}; idle and interval take durations (10m, 30), "
        "count a number of probes",
    )
    defaults.add_argument(
        "--persist",
        nargs="?",
        const=str(PERSIST_FILE),
        metavar="FILE",
        help=f"with --set: also write the values to FILE (default {PERSIST_FILE}), read at boot; "
        "the sysctls and the file change together or not at all",
    )
    where = defaults.add_mutually_exclusive_group()
    where.add_argument(
        "--pid", type=int, help="the network namespace process PID lives in (a container's; needs root)"
    )
    where.add_argument(
        "--netns", metavar="NAME", help="the named network namespace /run/netns/NAME (ip netns)"
    )
    defaults.add_argument(
        "--k8s",
        action="store_true",
        help="also print the values as a Kubernetes pod's securityContext.sysctls",
    )
    defaults.set_defaults(func=run)


def _parse_set(pairs: Sequence[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        field = SET_KEYS.get(key.strip().lower().replace("/", "."))
        if not sep or field is None:
            raise UsageError(f"--set takes KEY=VALUE with KEY one of {_KEYS_TEXT}; got {pair!r}")
        if field in values:
            raise UsageError(f"--set names {field} twice")
        if field == "count":
            digits = value.strip()
            if not (digits.isascii() and digits.isdigit()) or len(digits.lstrip("0")) > 9:
                raise UsageError(f"count {value!r} is not a whole number of probes (1 to 127)")
            values[field] = int(digits)
        else:
            values[field] = seconds(parse_duration(value, field))
    return values


def _namespace_path(args: argparse.Namespace) -> str | None:
    if args.pid is not None:
        validated(lambda: live.check_pid(args.pid, "--pid", running=True))
        return f"/proc/{args.pid}/ns/net"
    if args.netns is not None:
        name = args.netns
        if not name or "/" in name or name in (".", ".."):
            raise UsageError(
                f"--netns {name!r} is not a namespace name: expected a name from 'ip netns list'"
            )
        path = f"/run/netns/{name}"
        if not os.path.exists(path):
            raise UsageError(f"--netns {name!r}: there is no {path} (see 'ip netns list')")
        if _namespace_type(path) not in (None, CLONE_NEWNET):
            raise UsageError(f"--netns {name!r}: {path} is not a network namespace (see 'ip netns list')")
        return path
    return None


def _namespace_type(path: str) -> int | None:
    """The kind of namespace the file at ``path`` is (``NS_GET_NSTYPE``, Linux 4.11+: a CLONE_NEW*
    flag), 0 for a file that is none (a file ``ip netns add`` left without its bind mount), None
    where it cannot be told (not readable here, an older kernel): setns then decides."""
    import fcntl  # POSIX only; --netns is Linux's

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return int(fcntl.ioctl(fd, NS_GET_NSTYPE))
    except OSError as exc:
        return 0 if exc.errno == errno.ENOTTY else None
    finally:
        os.close(fd)


def _this_thread_netns() -> str:
    # thread-self, not self: in_network_namespace moves one thread, and /proc/self is the process.
    try:
        return os.readlink("/proc/thread-self/ns/net")
    except OSError:
        return live.netns_name()


def _in(path: str | None, call: Callable[[], T]) -> T:
    return call() if path is None else in_network_namespace(path, call)


def _defaults_data(defaults: SystemDefaults, retries: int | None, namespace: str) -> dict[str, Any]:
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
        data["network_namespace"] = namespace
        data["tcp_retries2"] = retries
        data["retransmission_timeout"] = None if retries is None else retransmission_timeout(retries)
    return data


def k8s_snippet(data: dict[str, Any]) -> str:
    """The pod spec fragment that gives a pod's network namespace these three values (they are
    namespaced, and in Kubernetes' safe set since 1.29: no kubelet flag needed)."""
    lines = ["securityContext:", "  sysctls:"]
    for field in ("idle", "interval", "count"):
        lines += [f"  - name: {SYSCTL_NAMES[field]}", f'    value: "{data[field]}"']
    return "\n".join(lines)


def _print_defaults(data: dict[str, Any], heading: str) -> None:
    idle, interval, count = data["idle"], data["interval"], data["count"]
    where = f", network namespace {data['network_namespace']}" if "network_namespace" in data else ""
    print(f"{paint(heading, 'bold')} ({data['source']}{where}):")
    linux = data["platform"] == "linux"
    names = (
        [SYSCTL_NAMES[f] for f in ("idle", "interval", "count")] if linux else ["idle", "interval", "count"]
    )
    retries = data.get("tcp_retries2")
    if retries is not None:
        names.append("net.ipv4.tcp_retries2")
    name_width = max(len(n) for n in names)
    value_width = max(len(str(v)) for v in (idle, interval, count, retries if retries is not None else 0))
    rows = [
        (idle, f"first probe after {human(idle)} of silence"),
        (interval, f"then one probe every {human(interval)}"),
        (count, f"the connection is dropped after {count} unanswered probes"),
    ]
    if retries is not None:
        rows.append(
            (
                retries,
                f"retransmissions before a connection with unacknowledged data is dropped "
                f"(about {human(data['retransmission_timeout'])}; no user timeout set)",
            )
        )
    for name, (value, meaning) in zip(names, rows):
        print(f"  {name:<{name_width}} = {value!s:<{value_width}}  {meaning}")
    print(
        f"A dead peer is found after {human(data['detection_time'])} "
        f"({idle} + {interval} x {count} = {data['detection_time']} s) on a socket that turns keepalive "
        "on and sets nothing else.\nKeepalive stays off unless a program turns it on (SO_KEEPALIVE)."
    )
    if retries is not None:
        print(
            "Keepalive probes go out only while nothing is in flight: with unacknowledged data a dead "
            "peer is found after the retransmissions instead (TCP_USER_TIMEOUT bounds both)."
        )


def run(args: argparse.Namespace) -> int:
    namespace = _namespace_path(args)
    if args.persist is not None and not args.set:
        raise UsageError("--persist writes the values --set gives: use it with --set")
    if args.persist is not None and namespace is not None:
        raise UsageError(
            f"--persist writes {PERSIST_FILE}, which the host applies to its own network namespace at boot, "
            "not to a container's: set a container's values where it is made (--k8s prints a pod's "
            "securityContext; docker run --sysctl)"
        )
    persist = None if args.persist is None else Path(args.persist)
    if persist is not None and (not persist.name or persist.is_dir()):
        raise UsageError(f"--persist {args.persist!r} is a directory: expected a file such as {PERSIST_FILE}")
    if args.set:
        values = _parse_set(args.set)
        validated(lambda: ka.KeepAlive(**values))  # every value checked before anything is written

        def change() -> tuple[SystemDefaults, int | None, str]:
            return set_system_defaults(**values, persist=persist), tcp_retries2(), _this_thread_netns()

        defaults, retries, netns = _in(namespace, change)
        heading = "System keepalive defaults now"
    else:

        def read() -> tuple[SystemDefaults, int | None, str]:
            return ka.system_defaults(), tcp_retries2(), _this_thread_netns()

        defaults, retries, netns = _in(namespace, read)
        heading = "System keepalive defaults"
    if namespace is not None and args.pid is not None:
        heading += f" of process {args.pid}'s network namespace"
    elif args.netns is not None:
        heading += f" of network namespace {args.netns}"
    data = _defaults_data(defaults, retries, netns)
    if args.set:
        data["persisted"] = None if persist is None else str(persist)
    if args.k8s:
        data["k8s"] = k8s_snippet(data)
    if args.json:
        print_json(data)
        return EXIT_OK
    _print_defaults(data, heading)
    if args.set:
        if persist is None:
            print(
                f"The change lasts until reboot: --persist also writes {PERSIST_FILE} (read at boot)."
                if namespace is None
                else "The change lasts as long as the network namespace: set it where the container is made "
                "(--k8s prints a pod's securityContext)."
            )
        else:
            print(f"Written to {persist} too: the values return at boot.")
    if args.k8s:
        print(f"\nIn a Kubernetes pod spec:\n{data['k8s']}")
    return EXIT_OK
