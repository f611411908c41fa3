"""``ka listen``: socket activation with a keepalive policy, for any server that takes a descriptor.

``ka listen 127.0.0.1:8000 --policy "idle=60 interval=10 count=5" -- gunicorn app:app`` makes each
listening socket (``socket``, ``SO_REUSEADDR``, ``bind``, the policy, then ``listen``), moves them
to descriptors 3, 4, ... and execs the command in its own process with the systemd
socket-activation variables: ``LISTEN_FDS`` (how many), ``LISTEN_PID`` (the exec'd process: ka
execs in place, so its own pid), ``LISTEN_FDNAMES`` (colon-separated names). The command also gets
``KA_POLICY`` (the policy as ``KeepAlive.parse`` reads it) for in-process glue. Only those
descriptors are inherited: every other descriptor ka opens is close-on-exec.

On Linux and FreeBSD accepted sockets inherit the listener's keepalive options, so the server
needs nothing else. On macOS they do not inherit idle (and ka leaves listening sockets alone
there), so ``ka listen`` hands over untouched listeners and says so: the server must apply the
policy per accepted socket (``ka.integrations.*`` does, reading ``KA_POLICY``). Windows has no
exec-with-descriptors: ``ka listen`` is not supported there.

Everything is checked before anything is created (addresses, policy, the command on PATH), and
every socket is made before the exec: a bad address, a port in use or a bad policy ends ka with
exit code 2 and a message, and the command never starts.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import ipaddress
import os
import shutil
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import NamedTuple, cast

from ._options import PLATFORM
from .policy import KeepAlive
from .server import Platform, prepare_listener

__all__ = [
    "SD_LISTEN_FDS_START",
    "Address",
    "ListenError",
    "activation_environment",
    "add_arguments",
    "create_listeners",
    "parse_address",
    "place_descriptors",
    "split_command",
]

#: The first descriptor passed by socket activation (``sd_listen_fds(3)``): 3.
SD_LISTEN_FDS_START = 3
DEFAULT_FDNAME = "ka-listen"
_MAX_FDNAME = 255  # systemd's fdname_is_valid()

_ADDRESS_FORMS = "HOST:PORT with an IP address: 127.0.0.1:8000, 0.0.0.0:8000, [::1]:8000, [::]:8000"


class ListenError(ValueError):
    """Bad input or a socket that could not be made: ``ka listen`` exits with code 2."""


class Address(NamedTuple):
    """One listening address: its family, ``bind()`` tuple and the text it was given as."""

    family: int
    sockaddr: tuple[str, int] | tuple[str, int, int, int]
    text: str


def parse_address(text: str) -> Address:
    """``127.0.0.1:8000`` or ``[::1]:8000`` (IP literals; port 0 lets the kernel choose).

    Unix socket paths are refused: keepalive is a TCP mechanism. Host names are refused too: a
    listener binds one address, and a name may stand for several.
    """
    raw = text.strip()
    if raw.startswith(("/", "./", "../", "~", "unix:", "@")) or raw.endswith(".sock"):
        raise ListenError(
            f"{text!r} is a Unix socket path: TCP keepalive applies to TCP connections only, so ka listen "
            f"takes {_ADDRESS_FORMS}"
        )
    host, sep, port_text = raw.rpartition(":")
    if not sep or not host:
        raise ListenError(f"{text!r} is not an address: expected {_ADDRESS_FORMS}")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ListenError(f"{text!r}: port {port_text!r} is not a TCP port: expected 0 to 65535")
    port = int(port_text)
    if host.startswith("[") and host.endswith("]"):
        literal = host[1:-1]
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise ListenError(
                f"{text!r}: {literal!r} is not an IPv6 address: expected {_ADDRESS_FORMS}"
            ) from None
        info = socket.getaddrinfo(
            literal, port, socket.AF_INET6, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST | socket.AI_PASSIVE
        )
        return Address(socket.AF_INET6, cast("tuple[str, int, int, int]", info[0][4]), raw)
    if ":" in host:
        raise ListenError(f"{text!r}: an IPv6 address goes in brackets: [{host}]:{port}")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise ListenError(
            f"{text!r}: {host!r} is not an IP address: ka listen binds addresses, not names "
            f"(expected {_ADDRESS_FORMS})"
        ) from None
    return Address(socket.AF_INET, (host, port), raw)


def _bind_failure(address: Address, exc: OSError) -> ListenError:
    why = {
        errno.EADDRINUSE: "the address is already in use (another socket listens on it)",
        errno.EADDRNOTAVAIL: "the address is not one of this machine's",
        errno.EACCES: "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return ListenError(f"cannot listen on {address.text}: {why} [errno {exc.errno}]")


def create_listeners(
    addresses: Sequence[Address],
    policy: KeepAlive,
    *,
    backlog: int = socket.SOMAXCONN,
    reuse_port: bool = False,
    ipv6_only: bool = False,
    platform: Platform | None = None,
) -> list[socket.socket]:
    """Listening sockets for ``addresses``, each given ``policy`` after ``bind()`` and before
    ``listen()`` (where the platform lets listeners carry it; see ``ka.server``), so no connection
    is ever accepted without it. All or none: on any failure the sockets made so far are closed
    and a ``ListenError`` names the address and the reason.

    ``ipv6_only``: ``IPV6_V6ONLY`` on IPv6 sockets; without it the system default applies (Linux:
    ``net.ipv6.bindv6only``, 0, so ``[::]`` also takes IPv4 connections).
    """
    made: list[socket.socket] = []
    try:
        for address in addresses:
            sock = socket.socket(address.family, socket.SOCK_STREAM)
            made.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if ipv6_only and address.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address.sockaddr)
            except OSError as exc:
                raise _bind_failure(address, exc) from None
            try:
                prepare_listener(sock, policy, platform=platform)
            except OSError as exc:
                raise ListenError(f"cannot give {address.text} the policy {policy}: {exc}") from None
            try:
                sock.listen(backlog)
            except OSError as exc:
                raise _bind_failure(address, exc) from None
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made


def place_descriptors(sockets: Sequence[socket.socket]) -> list[int]:
    """Move ``sockets`` to descriptors 3, 4, ... (inheritable, closing the socket objects); returns
    those numbers. Whatever held 3.. before is replaced, as ``systemd-socket-activate`` does.
    """
    count = len(sockets)
    # First above the target range, so placing one never closes another still to be placed.
    high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD_CLOEXEC, SD_LISTEN_FDS_START + count) for s in sockets]
    for sock in sockets:
        sock.close()
    placed = []
    for i, fd in enumerate(high):
        target = SD_LISTEN_FDS_START + i
        os.dup2(fd, target, inheritable=True)
        os.close(fd)
        placed.append(target)
    return placed


def activation_environment(
    environ: Mapping[str, str], count: int, pid: int, names: Sequence[str], policy: KeepAlive
) -> dict[str, str]:
    """``environ`` plus the socket-activation variables for ``count`` descriptors passed to
    process ``pid``, and ``KA_POLICY``."""
    env = dict(environ)
    env["LISTEN_FDS"] = str(count)
    env["LISTEN_PID"] = str(pid)
    env["LISTEN_FDNAMES"] = ":".join(names)
    env["KA_POLICY"] = str(policy)
    return env


def fd_names(given: Sequence[str] | None, count: int) -> list[str]:
    """One name per descriptor: none given (each ``ka-listen``), one (for all) or one per address."""
    names = list(given or [DEFAULT_FDNAME])
    for name in names:
        if not name or len(name) > _MAX_FDNAME or ":" in name or not name.isprintable() or not name.isascii():
            raise ListenError(
                f"--fdname {name!r} is not a descriptor name: expected 1 to {_MAX_FDNAME} printable ASCII "
                "characters without ':'"
            )
    if len(names) == 1:
        return names * count
    if len(names) != count:
        raise ListenError(
            f"--fdname was given {len(names)} times for {count} addresses: give it once, or once per address"
        )
    return names


def split_command(rest: Sequence[str]) -> tuple[list[str], list[str]]:
    """``[ADDR..., OPTIONS..., "--", COMMAND, ARGS...]`` -> (before ``--``, the command)."""
    if "--" not in rest:
        raise ListenError("no command: expected ka listen ADDR [ADDR...] [options] -- COMMAND [ARGS...]")
    cut = list(rest).index("--")
    command = list(rest[cut + 1 :])
    if not command:
        raise ListenError(
            "no command after '--': expected ka listen ADDR [ADDR...] [options] -- COMMAND [ARGS...]"
        )
    return list(rest[:cut]), command


def _resolve_program(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        where = "" if os.sep in program else " on PATH"
        raise ListenError(f"command {program!r} was not found{where} (or is not executable)")
    return path


MACOS_NOTE = (
    "on macOS accepted sockets do not take the listener's keepalive idle (and ka leaves listening "
    "sockets alone there), so ka listen alone is not enough: the listeners are passed on untouched, "
    "and the server must apply the policy to each accepted socket. Use the in-process glue "
    "(ka.integrations.gunicorn, .uvicorn, .hypercorn, ...), which reads KA_POLICY, or ka.server."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``ka listen`` other than the policy (``ka.cli`` adds those)."""
    parser.add_argument(
        "--backlog",
        type=int,
        default=socket.SOMAXCONN,
        metavar="N",
        help=f"listen() backlog (default {socket.SOMAXCONN}; Linux caps it at net.core.somaxconn)",
    )
    parser.add_argument("--reuse-port", action="store_true", help="set SO_REUSEPORT on each listener")
    parser.add_argument(
        "--ipv6-only",
        action="store_true",
        help="IPV6_V6ONLY on IPv6 listeners (default: the system's; on Linux [::] also takes IPv4)",
    )
    parser.add_argument(
        "--fdname",
        action="append",
        metavar="NAME",
        help=f"LISTEN_FDNAMES entry: once for all, or once per address (default {DEFAULT_FDNAME})",
    )


def run(args: argparse.Namespace, policy: KeepAlive, *, platform: Platform | None = None) -> int:
    """``ka listen``: checks everything, makes the listeners, execs the command (never returns on
    success). ``args``: ``addresses``, ``program`` (the command and its arguments), ``backlog``,
    ``reuse_port``, ``ipv6_only``, ``fdname``. Raises ``ListenError`` for anything wrong before
    the exec."""
    if PLATFORM == "windows":
        raise NotImplementedError(
            "ka listen needs exec() with inherited descriptors: not available on Windows"
        )
    plat = Platform.current() if platform is None else platform
    addresses = [parse_address(text) for text in args.addresses]
    seen: dict[object, str] = {}
    for address in addresses:
        if address.sockaddr in seen and address.sockaddr[1] != 0:
            raise ListenError(
                f"{address.text} is given twice (as {seen[address.sockaddr]!r} and {address.text!r})"
            )
        seen[address.sockaddr] = address.text
    if args.ipv6_only and not any(a.family == socket.AF_INET6 for a in addresses):
        raise ListenError("--ipv6-only applies to IPv6 addresses ([::1]:8000), and none was given")
    if args.backlog < 1:
        raise ListenError(f"--backlog {args.backlog} is not a queue length: expected 1 or more")
    if args.reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        raise ListenError("--reuse-port: this platform has no SO_REUSEPORT")
    names = fd_names(args.fdname, len(addresses))
    program = _resolve_program(args.program[0])

    if plat.mode != "inherit":
        print(f"ka listen: note: {MACOS_NOTE}", file=sys.stderr)
    sockets = create_listeners(
        addresses,
        policy,
        backlog=args.backlog,
        reuse_port=args.reuse_port,
        ipv6_only=args.ipv6_only,
        platform=plat,
    )
    bound = [s.getsockname() for s in sockets]
    fds = place_descriptors(sockets)
    for fd, name, address in zip(fds, names, bound):
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        print(f"ka listen: fd {fd} ({name}) listens on {host}:{address[1]} with {policy}", file=sys.stderr)
    sys.stderr.flush()
    env = activation_environment(os.environ, len(fds), os.getpid(), names, policy)
    try:
        os.execve(program, args.program, env)
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        raise ListenError(f"cannot run {args.program[0]!r}: {exc.strerror or exc}") from None
