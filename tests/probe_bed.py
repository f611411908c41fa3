"""Middleboxes in network namespaces for ``ka probe``: client - router - server, joined by veth.

The router is one of:

- ``nat-silent``: a NAT (masquerade) whose conntrack forgets an established flow after
  ``timeout`` s of silence (``nf_conntrack_tcp_timeout_established`` in the router's namespace
  only); ``nf_conntrack_tcp_loose=0`` keeps a later packet from re-creating the entry and
  ``ct state invalid drop`` (forward and the router's own input) black-holes it. Keepalive probes
  and their answers are packets of the flow: they refresh the entry.
- ``nat-reset``: the same NAT answering a packet of a forgotten flow with a TCP reset.
- ``proxy``: socat terminating both sides (``-T timeout``: it closes both after that long without
  payload; keepalive probes carry none, so they do not count), with a backlog of 128 as real
  proxies have (socat's default of 5 overflows when connections arrive in a burst).
- ``open``: the NAT with the namespace's default conntrack timeout (5 days): nothing times out.

Names carry this process's id (``kap-PID-N-client``); ``Bed`` removes its namespaces and ends the
processes it started (by their process group) on every exit, and ``sweep_stale`` removes beds
left by test processes that no longer exist. No global sysctl is touched.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING

from server_helpers import stop

if TYPE_CHECKING:
    from typing_extensions import Self

KINDS = ("nat-silent", "nat-reset", "proxy", "open")
CLIENT, ROUTER_NEAR, ROUTER_FAR, SERVER = "10.77.1.2", "10.77.1.1", "10.77.2.1", "10.77.2.2"
SERVER_PORT = 7000
PROXY_PORT = 7100
PREFIX = "kap"
_serial = itertools.count()


def unavailable(*, redis: bool = False) -> str | None:
    """Why the bed cannot be built here, or None."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "the middlebox bed creates network namespaces: it needs root (CI runs the suite as root)"
    tools = [("ip", "iproute2"), ("nft", "nftables"), ("socat", "socat")]
    if redis:
        tools.append(("redis-server", "redis-server"))
    for tool, package in tools:
        if shutil.which(tool) is None:
            return f"the {tool!r} command is missing (Debian package {package})"
    if not os.path.exists("/proc/sys/net/netfilter"):
        return "netfilter connection tracking is not available in this kernel"
    return None


def _run(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Delete the bed namespaces whose creating process is gone (a killed earlier run)."""
    removed = []
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.fullmatch(rf"{PREFIX}-(\d+)-\d+-(client|router|server)", name)
        if match and not _alive(int(match.group(1))):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
            removed.append(name)
    return removed


class Bed:
    """One client - router - server chain; a context manager that always cleans up."""

    def __init__(self, kind: str, timeout: float | None, *, redis: bool = False) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self.kind, self.timeout, self.redis = kind, timeout, redis
        n = next(_serial)
        pid = os.getpid()
        self.ns = {role: f"{PREFIX}-{pid}-{n}-{role}" for role in ("client", "router", "server")}
        self.links = {end: f"kp{pid}{n}{end}" for end in "abcd"}  # at most 15 characters
        self._namespaces: list[str] = []
        self._groups: list[subprocess.Popen[bytes]] = []

    # -- building --------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        try:
            self._build()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def exec(self, role: str, *argv: str, stdin: str | None = None) -> str:
        return _run("ip", "netns", "exec", self.ns[role], *argv, stdin=stdin)

    def _build(self) -> None:
        for name in self.ns.values():
            _run("ip", "netns", "add", name)
            self._namespaces.append(name)
        a, b, c, d = (self.links[end] for end in "abcd")
        _run(
            "ip",
            "link",
            "add",
            a,
            "netns",
            self.ns["client"],
            "type",
            "veth",
            "peer",
            "name",
            b,
            "netns",
            self.ns["router"],
        )
        _run(
            "ip",
            "link",
            "add",
            c,
            "netns",
            self.ns["router"],
            "type",
            "veth",
            "peer",
            "name",
            d,
            "netns",
            self.ns["server"],
        )
        for role, link, address in (
            ("client", a, CLIENT),
            ("router", b, ROUTER_NEAR),
            ("router", c, ROUTER_FAR),
            ("server", d, SERVER),
        ):
            _run("ip", "-n", self.ns[role], "addr", "add", f"{address}/24", "dev", link)
            _run("ip", "-n", self.ns[role], "link", "set", link, "up")
        for role in self.ns:
            _run("ip", "-n", self.ns[role], "link", "set", "lo", "up")
        _run("ip", "-n", self.ns["client"], "route", "add", "default", "via", ROUTER_NEAR)
        if self.kind == "proxy":
            self._start(
                [
                    "socat",
                    f"-T{self.timeout:g}",
                    f"TCP-LISTEN:{PROXY_PORT},bind={ROUTER_NEAR},fork,reuseaddr,backlog=128",
                    f"TCP:{SERVER}:{SERVER_PORT}",
                ],
                "router",
            )
        else:
            self._nat()
        self._start_server()

    def _nat(self) -> None:
        forgotten = "reject with tcp reset" if self.kind == "nat-reset" else "drop"
        ruleset = (
            "table inet probe_bed {\n"
            "  chain forward_filter { type filter hook forward priority 0;\n"
            f"    ct state invalid meta l4proto tcp {forgotten}\n"
            "    ct state invalid drop\n  }\n"
            "  chain input_filter { type filter hook input priority 0; ct state invalid drop; }\n"
            "  chain postrouting_nat { type nat hook postrouting priority 100;\n"
            f'    oifname "{self.links["c"]}" masquerade\n  }}\n'
            "}\n"
        )
        self.exec("router", "nft", "-f", "-", stdin=ruleset)
        # Per-namespace sysctls (the rules above start conntrack here); global ones are left alone.
        settings = ["net.ipv4.ip_forward=1", "net.netfilter.nf_conntrack_tcp_loose=0"]
        if self.kind != "open":
            settings.append(f"net.netfilter.nf_conntrack_tcp_timeout_established={self.timeout:g}")
        self.exec("router", "sysctl", "-q", "-w", *settings)

    def _start(self, argv: list[str], role: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[role], *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._groups.append(process)
        return process

    def _start_server(self) -> None:
        if self.redis:
            self._start(
                [
                    "redis-server",
                    "--port",
                    str(SERVER_PORT),
                    "--bind",
                    SERVER,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "no",
                    "--daemonize",
                    "no",
                ],
                "server",
            )
        else:
            self._start(
                [sys.executable, "-m", "ka", "probe", "--serve", str(SERVER_PORT), "--bind", SERVER], "server"
            )
        self._wait_listening(SERVER, SERVER_PORT, "server")
        if self.kind == "proxy":
            self._wait_listening(ROUTER_NEAR, PROXY_PORT, "router")

    def _wait_listening(self, address: str, port: int, role: str) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            listening = self.exec(role, "ss", "-Hltn", f"src {address}:{port}")
            if listening.strip():
                return
            time.sleep(0.05)
        raise RuntimeError(f"nothing listens on {address}:{port} in {self.ns[role]} after 20 s")

    # -- using -----------------------------------------------------------------------------------
    @property
    def target(self) -> str:
        return f"{ROUTER_NEAR}:{PROXY_PORT}" if self.kind == "proxy" else f"{SERVER}:{SERVER_PORT}"

    def probe_command(self, *args: str) -> list[str]:
        """``ka probe TARGET ARGS`` run in the client namespace."""
        return [
            "ip",
            "netns",
            "exec",
            self.ns["client"],
            sys.executable,
            "-m",
            "ka",
            "probe",
            self.target,
            *args,
        ]

    def established(self, role: str = "server") -> int:
        """TCP connections established in a namespace (the server's: those ka probe left)."""
        return len(self.exec(role, "ss", "-Htn", "state", "established").splitlines())

    # -- removing --------------------------------------------------------------------------------
    def remove(self) -> None:
        """End the processes started here (their whole process group, then anything still running
        inside these namespaces: only this bed runs there), delete the namespaces."""
        while self._groups:
            stop(self._groups.pop())
        for name in self._namespaces:
            inside = subprocess.run(
                ["ip", "netns", "pids", name], capture_output=True, text=True, check=False
            )
            for pid in inside.stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        while self._namespaces:
            subprocess.run(["ip", "netns", "del", self._namespaces.pop()], capture_output=True, check=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
