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

``--inherited``: ka is itself the command of another socket activator (systemd, a socket unit,
``systemd-socket-activate``): it takes the descriptors that activator passed it (``LISTEN_FDS``
for this pid), gives the TCP listeners among them the policy, and passes all of them on unchanged
in number and order, so the server sees the activator's sockets. Connections already queued on
them keep the values they were made with.

``--nodelay`` (``TCP_NODELAY``, systemd's ``NoDelay=``) and ``--defer-accept SECONDS``
(``TCP_DEFER_ACCEPT``, Linux; systemd's ``DeferAcceptSec=``) are set on the listeners too: Linux
copies ``TCP_NODELAY`` into accepted sockets, and a deferred listener hands a connection to
``accept()`` only once its first data arrived (or the time ran out).

The command gets ``LISTEN_PIDFDID`` (libsystemd 258+ checks it against its own pidfd in
``sd_listen_fds()``): the id of ka's own pidfd, which the exec'd command keeps, where the kernel
has pidfs (6.9+); elsewhere an inherited one is removed, never passed on stale.

Everything is checked before anything is created (addresses, policy, the command on PATH, enough
descriptors), and every socket is made before the exec: a bad address, a port in use, a bad
policy or too few descriptors ends ka with exit code 2 and a message naming the argument, and the
command never starts.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import ipaddress
import os
import resource
import shutil
import socket
import stat
import sys
from collections.abc import Mapping, Sequence
from typing import NamedTuple, NoReturn, cast

from ._durations import parse_duration
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
    "inherited_descriptors",
    "own_pidfd_id",
    "parse_address",
    "place_descriptors",
    "split_command",
]

#: The first descriptor passed by socket activation (``sd_listen_fds(3)``): 3.
SD_LISTEN_FDS_START = 3
DEFAULT_FDNAME = "ka-listen"
_MAX_FDNAME = 255  # systemd's fdname_is_valid()
_MAX_BACKLOG = 2**31 - 1  # listen() takes a C int (Linux then caps it at net.core.somaxconn)
_PID_FS_MAGIC = 0x50494446  # <linux/magic.h>: a pidfd on pidfs has a unique inode id

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
    # ASCII digits only: str.isdigit() takes "²", which int() refuses.
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5 or int(port_text) > 65535:
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
        _, percent, zone = literal.partition("%")
        if percent:
            _check_zone(text, zone)
        try:
            info = socket.getaddrinfo(
                literal,
                port,
                socket.AF_INET6,
                socket.SOCK_STREAM,
                0,
                socket.AI_NUMERICHOST | socket.AI_PASSIVE,
            )
        except socket.gaierror as exc:
            raise ListenError(
                f"{text!r}: {literal!r} is not an address to listen on: {exc.strerror}"
            ) from None
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


def _check_zone(text: str, zone: str) -> None:
    """An IPv6 zone (``fe80::1%eth0``) must name an interface of this machine, or be its index."""
    if zone.isascii() and zone.isdigit():
        return
    try:
        socket.if_nametoindex(zone)
    except (OSError, ValueError):
        known = (
            ", ".join(name for _, name in socket.if_nameindex()) if hasattr(socket, "if_nameindex") else ""
        )
        raise ListenError(
            f"{text!r}: the zone {zone!r} is not a network interface here"
            + (f" (interfaces: {known})" if known else "")
        ) from None


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
    nodelay: bool = False,
    defer_accept: int | None = None,
    platform: Platform | None = None,
) -> list[socket.socket]:
    """Listening sockets for ``addresses``, each given ``policy`` after ``bind()`` and before
    ``listen()`` (where the platform lets listeners carry it; see ``ka.server``), so no connection
    is ever accepted without it. All or none: on any failure the sockets made so far are closed
    and a ``ListenError`` names the address and the reason.

    ``ipv6_only``: ``IPV6_V6ONLY`` on IPv6 sockets; without it the system default applies (Linux:
    ``net.ipv6.bindv6only``, 0, so ``[::]`` also takes IPv4 connections). ``nodelay`` and
    ``defer_accept`` (seconds): see ``listener_options``.
    """
    made: list[socket.socket] = []
    try:
        for address in addresses:
            try:
                sock = socket.socket(address.family, socket.SOCK_STREAM)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    raise descriptor_shortage(address.text, len(addresses), exc) from None
                raise
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
            listener_options(sock, address.text, nodelay=nodelay, defer_accept=defer_accept)
            try:
                sock.listen(backlog)
            except OSError as exc:
                raise _bind_failure(address, exc) from None
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made


def listener_options(sock: socket.socket, name: str, *, nodelay: bool, defer_accept: int | None) -> None:
    """``TCP_NODELAY`` (accepted sockets inherit it on Linux) and ``TCP_DEFER_ACCEPT`` (seconds;
    Linux: ``accept()`` returns a connection once data arrived on it) on a listener; a failure is a
    ``ListenError`` naming the listener."""
    try:
        if nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if defer_accept is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, defer_accept)
    except OSError as exc:
        option = "TCP_NODELAY" if nodelay and defer_accept is None else "TCP_NODELAY/TCP_DEFER_ACCEPT"
        raise ListenError(
            f"cannot set {option} on {name}: {exc.strerror or exc} [errno {exc.errno}]"
        ) from None


def descriptor_limit() -> int:
    """This process's soft limit on open descriptors (RLIMIT_NOFILE)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return int(soft) if soft != resource.RLIM_INFINITY else 2**31 - 1


def descriptors_needed(count: int) -> int:
    """Descriptors ``ka listen`` needs for ``count`` listeners: 0-2, the listeners, and a second
    copy of each while they are moved to 3, 4, ... (``place_descriptors``)."""
    return SD_LISTEN_FDS_START + 2 * count


def descriptor_shortage(name: str, count: int, exc: OSError | None = None) -> ListenError:
    why = f"{exc.strerror} [errno {exc.errno}]: " if exc is not None else ""
    return ListenError(
        f"cannot make the listener for {name}: {why}ka listen needs {descriptors_needed(count)} descriptors "
        f"for {count} listener{'s' if count != 1 else ''} (3 + 2 x {count}) and the limit is "
        f"{descriptor_limit()} (RLIMIT_NOFILE): raise it (ulimit -n) or give fewer addresses"
    )


def place_descriptors(sockets: Sequence[socket.socket]) -> list[int]:
    """Move ``sockets`` to descriptors 3, 4, ... (inheritable, closing the socket objects); returns
    those numbers. Whatever held 3.. before is replaced, as ``systemd-socket-activate`` does.
    """
    count = len(sockets)
    # First above the target range, so placing one never closes another still to be placed.
    high: list[int] = []
    try:
        for sock in sockets:
            high.append(fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, SD_LISTEN_FDS_START + count))
    except OSError as exc:
        # EMFILE, or EINVAL when the range starts at or above the limit.
        for fd in high:
            os.close(fd)
        if exc.errno in (errno.EMFILE, errno.EINVAL):
            name = _sockname_text(sockets[len(high)])
            raise descriptor_shortage(name, count, exc) from None
        raise
    for sock in sockets:
        sock.close()
    placed = []
    for i, fd in enumerate(high):
        target = SD_LISTEN_FDS_START + i
        os.dup2(fd, target, inheritable=True)
        os.close(fd)
        placed.append(target)
    return placed


def _sockname_text(sock: socket.socket) -> str:
    try:
        address = sock.getsockname()
    except OSError:
        return f"fd {sock.fileno()}"
    if not isinstance(address, tuple):
        return repr(address)
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    return f"{host}:{address[1]}"


def own_pidfd_id() -> int | None:
    """The id ``sd_listen_fds()`` (libsystemd 258+) compares ``LISTEN_PIDFDID`` with: the inode
    number of a pidfd of this process on pidfs (Linux 6.9+), which stays the same across exec;
    None where it cannot be had (no pidfs, an older kernel, 32-bit inode numbers, not Linux)."""
    if not hasattr(os, "pidfd_open") or ctypes.sizeof(ctypes.c_long) < 8:
        return None
    try:
        pidfd = os.pidfd_open(os.getpid())
    except OSError:
        return None
    try:
        # statfs's first field is f_type (a long on 64-bit Linux); the rest is not read.
        buffer = (ctypes.c_long * 16)()
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.fstatfs(ctypes.c_int(pidfd), ctypes.byref(buffer)) != 0 or buffer[0] != _PID_FS_MAGIC:
            return None
        return int(os.fstat(pidfd).st_ino)
    finally:
        os.close(pidfd)


def activation_environment(
    environ: Mapping[str, str], count: int, pid: int, names: Sequence[str], policy: KeepAlive
) -> dict[str, str]:
    """``environ`` plus the socket-activation variables for ``count`` descriptors passed to
    process ``pid`` (this process, about to exec), and ``KA_POLICY``. ``LISTEN_PIDFDID`` is
    this process's pidfd id where the kernel has one, else removed: an inherited one names
    another process, and libsystemd would then ignore the descriptors."""
    env = dict(environ)
    env["LISTEN_FDS"] = str(count)
    env["LISTEN_PID"] = str(pid)
    env["LISTEN_FDNAMES"] = ":".join(names)
    env["KA_POLICY"] = str(policy)
    pidfd_id = own_pidfd_id() if pid == os.getpid() else None
    if pidfd_id is None:
        env.pop("LISTEN_PIDFDID", None)
    else:
        env["LISTEN_PIDFDID"] = str(pidfd_id)
    return env


class Inherited(NamedTuple):
    """The descriptors another socket activator passed to this process, and their names."""

    fds: list[int]
    names: list[str]


def inherited_descriptors(environ: Mapping[str, str]) -> Inherited:
    """``LISTEN_FDS`` descriptors passed to this process (``LISTEN_PID``, and ``LISTEN_PIDFDID``
    where set and checkable), as ``sd_listen_fds()`` reads them; a ListenError says what is
    missing or wrong."""
    pid_text, count_text = environ.get("LISTEN_PID", ""), environ.get("LISTEN_FDS", "")
    if not pid_text or not count_text:
        raise ListenError(
            "--inherited takes the listeners a socket activator passed in LISTEN_FDS and LISTEN_PID "
            "(systemd, systemd-socket-activate), and neither is set here"
        )
    if not (pid_text.isascii() and pid_text.isdigit()) or int(pid_text) != os.getpid():
        raise ListenError(
            f"--inherited: LISTEN_PID is {pid_text!r}, not this process ({os.getpid()}): the descriptors "
            "were passed to another process"
        )
    pidfd_text = environ.get("LISTEN_PIDFDID")
    own = own_pidfd_id()
    if pidfd_text is not None and own is not None and pidfd_text != str(own):
        raise ListenError(
            f"--inherited: LISTEN_PIDFDID is {pidfd_text!r}, not this process's pidfd ({own}): the "
            "descriptors were passed to another process that had this pid"
        )
    if not (count_text.isascii() and count_text.isdigit()) or not 1 <= int(count_text) <= 4096:
        raise ListenError(
            f"--inherited: LISTEN_FDS is {count_text!r}: expected a number of descriptors, 1 or more"
        )
    count = int(count_text)
    fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))
    for fd in fds:
        try:
            os.fstat(fd)
        except OSError:
            raise ListenError(
                f"--inherited: LISTEN_FDS says {count} descriptors from {SD_LISTEN_FDS_START}, but fd {fd} "
                "is not open"
            ) from None
    names_text = environ.get("LISTEN_FDNAMES")
    names = names_text.split(":") if names_text else ["unknown"] * count
    if len(names) != count:
        raise ListenError(f"--inherited: LISTEN_FDNAMES has {len(names)} names for {count} descriptors")
    return Inherited(fds, names)


def _tcp_listener(fd: int) -> socket.socket | None:
    """A socket object sharing ``fd`` (detach it after use) if it is a listening TCP socket."""
    if not stat.S_ISSOCK(os.fstat(fd).st_mode):
        return None
    sock = socket.socket(fileno=fd)
    try:
        accepting = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM and accepting:
            return sock
    except OSError:
        pass
    sock.detach()
    return None


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
        "--inherited",
        action="store_true",
        help="take the listeners passed to ka in LISTEN_FDS (systemd, systemd-socket-activate) instead of "
        "making them: give them the policy and pass them on",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=None,
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
        "--nodelay",
        action="store_true",
        help="TCP_NODELAY on the listeners, which accepted sockets inherit (systemd's NoDelay=)",
    )
    parser.add_argument(
        "--defer-accept",
        metavar="DURATION",
        help="TCP_DEFER_ACCEPT (Linux): accept() returns a connection only once data arrived on it, or "
        "after this long (systemd's DeferAcceptSec=; whole seconds)",
    )
    parser.add_argument(
        "--fdname",
        action="append",
        metavar="NAME",
        help=f"LISTEN_FDNAMES entry: once for all, or once per address (default {DEFAULT_FDNAME})",
    )


def _defer_seconds(text: str | None) -> int | None:
    if text is None:
        return None
    if not hasattr(socket, "TCP_DEFER_ACCEPT"):
        raise ListenError(
            f"--defer-accept: this platform has no TCP_DEFER_ACCEPT (Linux only), not {sys.platform}"
        )
    try:
        value = parse_duration(text, "--defer-accept")
    except ValueError as exc:
        raise ListenError(str(exc)) from None
    whole = int(-(-value // 1))  # rounded up: 0.5 s waits 1 s, never 0 (which turns it off)
    if not 1 <= whole <= _MAX_BACKLOG:
        raise ListenError(f"--defer-accept {text!r} is out of range: expected 1 to {_MAX_BACKLOG} seconds")
    return whole


def _print_listening(
    fds: Sequence[int], names: Sequence[str], where: Sequence[str | None], policy: KeepAlive
) -> None:
    for fd, name, address in zip(fds, names, where):
        # An address, or None for an inherited descriptor that is no TCP listener.
        what = f"listens on {address} with {policy}" if address else "is no TCP listener: passed on untouched"
        print(f"ka listen: fd {fd} ({name}) {what}", file=sys.stderr)
    sys.stderr.flush()


def _exec(program: str, argv: list[str], env: dict[str, str], fds: Sequence[int], *, close: bool) -> NoReturn:
    try:
        os.execve(program, argv, env)
    except OSError as exc:
        if close:
            for fd in fds:
                os.close(fd)
        raise ListenError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None


def _run_inherited(
    args: argparse.Namespace,
    policy: KeepAlive,
    plat: Platform,
    program: str,
    nodelay: bool,
    defer: int | None,
) -> int:
    """``--inherited``: the activator's descriptors get the policy (and the options) and are
    passed on as they came; descriptors that are not TCP listeners are passed on untouched."""
    for flag, given in (("--reuse-port", args.reuse_port), ("--ipv6-only", args.ipv6_only)):
        if given:
            raise ListenError(f"{flag} applies to listeners ka makes: with --inherited they exist already")
    if args.backlog is not None:
        raise ListenError("--backlog applies to listeners ka makes: with --inherited they listen already")
    inherited = inherited_descriptors(os.environ)
    names = fd_names(args.fdname, len(inherited.fds)) if args.fdname else inherited.names
    where: list[str | None] = []
    for fd in inherited.fds:
        sock = _tcp_listener(fd)
        if sock is None:
            where.append(None)
            continue
        try:
            text = _sockname_text(sock)
            try:
                plan = prepare_listener(sock, policy, platform=plat)
            except OSError as exc:
                raise ListenError(f"cannot give fd {fd} ({text}) the policy {policy}: {exc}") from None
            listener_options(sock, f"fd {fd} ({text})", nodelay=nodelay, defer_accept=defer)
            if plan.pending:
                print(
                    f"ka listen: note: {plan.pending} connection(s) already queued on fd {fd} keep the "
                    "values they were made with",
                    file=sys.stderr,
                )
            where.append(text)
        finally:
            sock.detach()  # the descriptor stays open: it is the command's
        os.set_inheritable(fd, True)
    if plat.mode != "inherit":
        print(f"ka listen: note: {MACOS_NOTE}", file=sys.stderr)
    _print_listening(inherited.fds, names, where, policy)
    env = activation_environment(os.environ, len(inherited.fds), os.getpid(), names, policy)
    return _exec(program, args.program, env, inherited.fds, close=False)


def run(args: argparse.Namespace, policy: KeepAlive, *, platform: Platform | None = None) -> int:
    """``ka listen``: checks everything, makes the listeners, execs the command (never returns on
    success). ``args``: ``addresses``, ``program`` (the command and its arguments), ``backlog``
    (None: ``SOMAXCONN``), ``reuse_port``, ``ipv6_only``, ``fdname``, and optionally
    ``inherited``, ``nodelay``, ``defer_accept`` (text). Raises ``ListenError`` for anything
    wrong before the exec."""
    if PLATFORM == "windows":
        raise NotImplementedError(
            "ka listen needs exec() with inherited descriptors: not available on Windows"
        )
    plat = Platform.current() if platform is None else platform
    inherited = bool(getattr(args, "inherited", False))
    nodelay = bool(getattr(args, "nodelay", False))
    defer = _defer_seconds(getattr(args, "defer_accept", None))
    if inherited:
        if args.addresses:
            raise ListenError(
                "--inherited takes the listeners it was passed: give no address "
                f"(got {', '.join(args.addresses)})"
            )
        return _run_inherited(args, policy, plat, _resolve_program(args.program[0]), nodelay, defer)
    if not args.addresses:
        raise ListenError(
            "no address: expected ka listen ADDR [ADDR...] [options] -- COMMAND (or --inherited)"
        )
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
    backlog = socket.SOMAXCONN if args.backlog is None else args.backlog
    if not 1 <= backlog <= _MAX_BACKLOG:
        raise ListenError(
            f"--backlog {backlog} is not a queue length: expected 1 to {_MAX_BACKLOG} "
            f"(Linux caps it at net.core.somaxconn)"
        )
    if args.reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        raise ListenError("--reuse-port: this platform has no SO_REUSEPORT")
    names = fd_names(args.fdname, len(addresses))
    program = _resolve_program(args.program[0])
    if descriptors_needed(len(addresses)) > descriptor_limit():
        raise descriptor_shortage(addresses[0].text, len(addresses))

    if plat.mode != "inherit":
        print(f"ka listen: note: {MACOS_NOTE}", file=sys.stderr)
    sockets = create_listeners(
        addresses,
        policy,
        backlog=backlog,
        reuse_port=args.reuse_port,
        ipv6_only=args.ipv6_only,
        nodelay=nodelay,
        defer_accept=defer,
        platform=plat,
    )
    where = [_sockname_text(s) for s in sockets]
    fds = place_descriptors(sockets)
    _print_listening(fds, names, where, policy)
    env = activation_environment(os.environ, len(fds), os.getpid(), names, policy)
    return _exec(program, args.program, env, fds, close=True)
