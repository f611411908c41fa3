"""Checking what callers ask for (ports, process ids, state names, remote addresses, process name
patterns) and picking processes and connections by it."""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import re
from collections.abc import Iterable
from typing import NamedTuple

from .cgroup import Cgroup
from .cgroup import pids as cgroup_pids
from .model import Connection, Endpoint
from .procfs import (
    STATE_GROUPS,
    TCP_STATES,
    command_line,
    command_name,
    is_kernel_thread,
    process_ids,
    thread_group,
)


def _named(name: str, value: object) -> str:
    # A command-line flag reads "--pid 0", a keyword argument "pid=0".
    return f"{name} {value}" if name.startswith("-") else f"{name}={value!r}"


def _quoted(name: str, text: str) -> str:
    # Text a person typed, quoted either way: "--name '('", "name='('".
    return f"{name} {text!r}" if name.startswith("-") else f"{name}={text!r}"


def check_port(value: int | None, name: str) -> int | None:
    """``value`` when it is None or a TCP port (1 to 65535), else ValueError.

    ``name``: the keyword (``local_port``) or command-line flag (``--local-port``) it came by,
    which the message names as given.
    """
    if value is not None and not 0 < value < 65536:
        raise ValueError(f"{_named(name, value)} is not a TCP port: expected 1 to 65535")
    return value


def check_pid(pid: int, name: str = "pid", *, running: bool = False) -> int:
    """``pid`` when it is a positive process id, else ValueError (``name`` as for ``check_port``).

    ``running``: also that it names a running process (ProcessLookupError when none does) and not
    one of its threads (ValueError naming the process). Linux only.
    """
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise ValueError(f"{_named(name, pid)} is not a process id: expected a positive number")
    if running:
        group = thread_group(pid)
        if group is None:
            raise ProcessLookupError(errno.ESRCH, f"there is no process {pid}")
        if group != pid:
            use = _named(name, group)
            raise ValueError(f"{_named(name, pid)} is a thread of process {group}, not a process: use {use}")
    return pid


def normalize_states(states: Iterable[str]) -> frozenset[str]:
    """State names (as ss names them, or ``connected``/``all``) as a set; ValueError if unknown."""
    result: set[str] = set()
    for raw in states:
        name = raw.strip().lower().replace("_", "-")
        if name in STATE_GROUPS:
            result |= STATE_GROUPS[name]
        elif name in TCP_STATES.values():
            result.add(name)
        else:
            known = ", ".join([*sorted(STATE_GROUPS), *TCP_STATES.values()])
            raise ValueError(f"unknown TCP state {raw!r}: expected one of {known}")
    return frozenset(result)


def select(
    conns: Iterable[Connection],
    *,
    local_port: int | None = None,
    remote_port: int | None = None,
    states: frozenset[str] | None = None,
) -> list[Connection]:
    """The connections that pass every filter given (None: no filter); ``ConnectionFilter`` has more."""
    return ConnectionFilter(local_port, remote_port, states=states).pick(conns)


class Remote(NamedTuple):
    """A ``--remote`` filter: a network (None: any address) and a port (None: any port)."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    port: int | None

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        if self.network is None:
            return port
        text = str(self.network.network_address if _single(self.network) else self.network)
        return f"[{text}]{port}" if self.network.version == 6 and port else text + port

    def matches(self, endpoint: Endpoint) -> bool:
        if self.port is not None and endpoint.port != self.port:
            return False
        if self.network is None:
            return True
        address = ipaddress.ip_address(endpoint.address)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # an IPv4 peer of a dual-stack socket: ::ffff:10.0.0.1
        return address.version == self.network.version and address in self.network


def _single(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return network.prefixlen == network.max_prefixlen


def parse_remote(text: str, name: str = "remote") -> Remote:
    """A remote filter from ``10.0.0.5``, ``10.0.0.0/8``, ``10.0.0.5:5432``, ``[2001:db8::1]:443``,
    ``2001:db8::/32`` or ``:5432`` (any address, that port); ValueError naming ``text`` otherwise.
    Host names are refused: an audit must not depend on DNS answers."""
    raw = text.strip()
    address, port_text = raw, ""
    if raw.startswith("["):
        address, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{_quoted(name, text)} is not an address: expected [IPV6]:PORT")
        port_text = rest[1:]
    elif raw.count(":") == 1:
        address, _, port_text = raw.partition(":")
    port: int | None = None
    if port_text or raw.endswith(":"):
        if not port_text.isdigit():
            raise ValueError(f"{_quoted(name, text)}: port {port_text!r} is not a number")
        port = check_port(int(port_text), name)
    network = None
    if address:
        try:
            network = ipaddress.ip_network(address, strict=False)
        except ValueError:
            raise ValueError(
                f"{_quoted(name, text)} is not an IP address or network: expected e.g. 10.0.0.5, "
                "10.0.0.0/8, 10.0.0.5:5432, [2001:db8::1]:443 or :5432 (no host names)"
            ) from None
    if network is None and port is None:
        raise ValueError(f"{_quoted(name, text)} names neither an address nor a port")
    return Remote(network, port)


def compile_name(pattern: str, name: str = "name") -> re.Pattern[str]:
    """A ``--name`` pattern: a regular expression (as pgrep takes one); ValueError if it is not."""
    if not pattern:
        raise ValueError(f"{_quoted(name, pattern)} is empty: expected a name or a regular expression")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{_quoted(name, pattern)} is not a regular expression: {exc}") from None


@dataclasses.dataclass(frozen=True)
class ConnectionFilter:
    """What picks connections within a process; every filter given must hold (None: no filter).

    ``port``: the local or the remote port; ``remotes``: the remote end matches any of them.
    """

    local_port: int | None = None
    remote_port: int | None = None
    port: int | None = None
    remotes: tuple[Remote, ...] = ()
    states: frozenset[str] | None = None

    def __post_init__(self) -> None:
        for field in ("local_port", "remote_port", "port"):
            check_port(getattr(self, field), field)

    def matches(self, c: Connection) -> bool:
        return (
            (self.local_port is None or c.local.port == self.local_port)
            and (self.remote_port is None or c.remote.port == self.remote_port)
            and (self.port is None or self.port in (c.local.port, c.remote.port))
            and (not self.remotes or any(r.matches(c.remote) for r in self.remotes))
            and (self.states is None or c.state in self.states)
        )

    def pick(self, conns: Iterable[Connection]) -> list[Connection]:
        if self.local_port is None and self.remote_port is None and self.port is None and not self.remotes:
            states = self.states  # states alone (the usual case): no call per connection
            return list(conns) if states is None else [c for c in conns if c.state in states]
        return [c for c in conns if self.matches(c)]

    def describe(self) -> list[str]:
        """The filters given, in words, for messages and reports."""
        parts = []
        if self.local_port is not None:
            parts.append(f"local port {self.local_port}")
        if self.remote_port is not None:
            parts.append(f"remote port {self.remote_port}")
        if self.port is not None:
            parts.append(f"port {self.port} at either end")
        if self.remotes:
            parts.append("remote " + " or ".join(str(r) for r in self.remotes))
        return parts


@dataclasses.dataclass(frozen=True)
class ProcessFilter:
    """Which processes to look at. Each kind given narrows the choice (a process must pass every
    kind); the values of one kind widen it (any of the pids, any of the names).

    ``pids``: these processes; ``names``: regular expressions searched in the command name
    (``/proc/PID/comm``) or the whole command line (arguments joined by spaces), as ``pgrep``
    and ``pgrep -f`` do; ``cgroups``: the processes of these cgroup v2 directories and those below.
    None of them given: every process.
    """

    pids: tuple[int, ...] = ()
    names: tuple[re.Pattern[str], ...] = ()
    cgroups: tuple[Cgroup, ...] = ()

    def __post_init__(self) -> None:
        for pid in self.pids:
            check_pid(pid)

    @property
    def everything(self) -> bool:
        return not (self.pids or self.names or self.cgroups)

    def candidates(self) -> list[int]:
        """The process ids to look at, ascending (kernel threads left out: they hold no descriptors)."""
        if self.pids:
            found = set(self.pids)
        elif self.cgroups:
            found = {pid for group in self.cgroups for pid in cgroup_pids(group)}
        else:
            found = {pid for pid in process_ids() if not is_kernel_thread(pid)}
        if self.cgroups and self.pids:
            members = {pid for group in self.cgroups for pid in cgroup_pids(group)}
            found &= members
        if self.names:
            found = {pid for pid in found if self.named(pid)}
        return sorted(found)

    def named(self, pid: int) -> bool:
        """Whether a process's name or command line matches one of ``names``."""
        name = command_name(pid)
        line = command_line(pid)
        return any(p.search(name) or (line and p.search(line)) for p in self.names)

    def describe(self) -> list[str]:
        parts = []
        if self.pids:
            parts.append("pid " + ", ".join(str(p) for p in self.pids))
        if self.names:
            parts.append("name " + " or ".join(repr(p.pattern) for p in self.names))
        if self.cgroups:
            parts.append("cgroup " + " or ".join(str(g) for g in self.cgroups))
        return parts or ["every process"]
