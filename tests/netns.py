"""Two network namespaces joined by a veth pair, for tests against the real kernel (Linux, root).

``NetnsPair`` makes ``near`` and ``far`` namespaces, named with this process's id, joins them by
a veth pair (10.213.0.1 near, 10.213.0.2 far) and always removes them. Sockets are made inside a
namespace by a short-lived thread that enters it with setns(2): a socket stays in the namespace it
was made in, whichever thread uses it later. ``silence()`` drops every packet on the far side's
veth with nftables, so the far end neither hears nor answers.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from ka.live.netns import run_in_netns

if TYPE_CHECKING:
    from typing_extensions import Self

T = TypeVar("T")

NEAR_ADDR = "10.213.0.1"
FAR_ADDR = "10.213.0.2"
_serial = itertools.count()


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (run the suite as root, as CI does)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"the {tool!r} command is missing (Debian package {package})"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class NetnsPair:
    """``near`` and ``far`` network namespaces joined by veth; a context manager that cleans up."""

    def __init__(self) -> None:
        n = next(_serial)
        pid = os.getpid()
        self.names = {"near": f"ka-{pid}-{n}-near", "far": f"ka-{pid}-{n}-far"}
        # Interface names are at most 15 characters.
        self.ifnames = {"near": f"ka{pid}n{n}", "far": f"ka{pid}f{n}"}
        self.addrs = {"near": NEAR_ADDR, "far": FAR_ADDR}
        self._created: list[str] = []

    def create(self) -> None:
        try:
            for side in ("near", "far"):
                _ip("netns", "add", self.names[side])
                self._created.append(self.names[side])
            _ip(
                "link",
                "add",
                self.ifnames["near"],
                "netns",
                self.names["near"],
                "type",
                "veth",
                "peer",
                "name",
                self.ifnames["far"],
                "netns",
                self.names["far"],
            )
            for side in ("near", "far"):
                ns, ifname = self.names[side], self.ifnames[side]
                _ip("-n", ns, "addr", "add", f"{self.addrs[side]}/24", "dev", ifname)
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "link", "set", ifname, "up")
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        """Delete both namespaces (the veth pair goes with them); safe to call twice."""
        while self._created:
            name = self._created.pop()
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)

    def __enter__(self) -> Self:
        self.create()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def run(self, side: str, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in a new thread inside the ``side`` namespace; returns or raises its result."""
        return run_in_netns(f"/run/netns/{self.names[side]}", lambda: fn(*args))

    def make_socket(
        self, side: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM, proto: int = 0
    ) -> socket.socket:
        """A socket made inside the ``side`` namespace."""
        return self.run(side, socket.socket, family, kind, proto)

    def sockets(self, side: str, n: int) -> list[socket.socket]:
        """``n`` TCP sockets made inside the ``side`` namespace (one thread for all)."""
        return self.run(side, lambda: [socket.socket() for _ in range(n)])

    def listener(self, side: str, backlog: int = 1024) -> socket.socket:
        """A TCP listener on the ``side`` address, any port."""
        sock = self.make_socket(side)
        sock.bind((self.addrs[side], 0))
        sock.listen(backlog)
        return sock

    def ifindex(self, side: str) -> int:
        return self.run(side, socket.if_nametoindex, self.ifnames[side])

    def exec(self, side: str, *argv: str) -> str:
        """Run a command inside the ``side`` namespace; its stdout."""
        return subprocess.run(
            ["ip", "netns", "exec", self.names[side], *argv], check=True, capture_output=True, text=True
        ).stdout

    def silence(self, side: str = "far") -> None:
        """Drop every packet in and out of ``side``'s veth: the peer there goes silent."""
        ifname = self.ifnames[side]
        ruleset = (
            "table inet ka_silence {\n"
            f'  chain in {{ type filter hook input priority -300; iifname "{ifname}" drop; }}\n'
            f'  chain out {{ type filter hook output priority -300; oifname "{ifname}" drop; }}\n'
            "}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", self.names[side], "nft", "-f", "-"],
            input=ruleset,
            check=True,
            capture_output=True,
            text=True,
        )


def connect_pairs(pair: NetnsPair, n: int) -> tuple[list[socket.socket], list[socket.socket]]:
    """``n`` connections from near to far: (near ends, far ends), index for index."""
    with pair.listener("far", backlog=max(n, 16)) as listener:
        port = listener.getsockname()[1]
        near = pair.sockets("near", n)
        far: list[socket.socket] = []
        for sock in near:
            sock.connect((FAR_ADDR, port))
            accepted, _ = listener.accept()
            far.append(accepted)
    return near, far
