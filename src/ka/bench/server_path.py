"""The server path: ns per accepted connection for each way of giving an accepted socket the policy."""

from __future__ import annotations

import socket
from collections.abc import Callable
from functools import partial

import ka

from .methods import Values, stdlib_apply
from .pool import LoopbackPool

SERVER_MODES = {
    "accept only (no keepalive)": "none",
    "stdlib: 4 setsockopt per accept": "stdlib",
    "ka.apply per accept": "ka",
    "inherited from the listener (set once)": "inherit",
}


def _stdlib_apply_one(sock: socket.socket, values: Values) -> None:
    stdlib_apply([sock], values)


def _ka_apply_one(sock: socket.socket, policy: ka.KeepAlive) -> None:
    ka.apply(sock, policy)


def server_path_once(mode: str, n: int) -> float:
    """ns per accepted connection, accept loop included, for one way of giving the policy."""
    policy = ka.KeepAlive(61, 11, 6)
    values = (61, 11, 6)
    prepare: Callable[[socket.socket], object] | None = None
    on_accept: Callable[[socket.socket], object] | None = None
    if mode == "stdlib":
        on_accept = partial(_stdlib_apply_one, values=values)
    elif mode == "ka":
        on_accept = partial(_ka_apply_one, policy=policy)
    elif mode == "inherit":
        prepare = partial(_ka_apply_one, policy=policy)
    with LoopbackPool(n, prepare_listener=prepare, on_accept=on_accept, connect_first=True) as pool:
        if mode != "none":
            assert ka.read(pool.sockets[-1]).idle == 61, f"{mode}: policy missing on an accepted socket"
        return pool.accept_ns / n


def server_path(n: int, rounds: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {label: [] for label in SERVER_MODES}
    labels = list(SERVER_MODES)
    for r in range(rounds):
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            samples[label].append(server_path_once(SERVER_MODES[label], n))
    return samples
