"""A plain Python client and server for the ka guard tests, run inside a cgroup; it sets no
socket option unless told to.

    python guard_peer.py CGROUP_PROCS PORT4 PORT6 [--listen-before-join] [--own-values]

It joins the cgroup (writes its pid to CGROUP_PROCS; ``-``: it was started inside), then: listens
on 127.0.0.1 and ::1, connects to each of its own listeners and accepts (both ends inside),
connects to the test's servers on PORT4 and PORT6 (0: skip), and accepts whatever else connects
to its listeners. ``--listen-before-join``: a third listener (127.0.0.1) made before joining,
whose accepted connections the guard cannot cover. ``--own-values``: one more connection to
PORT4 that sets keepalive 99/11/2 after it is established, as redis-cli does.

It prints one JSON line: its listeners' ports and, per connection it made, the local port; then
serves until stdin closes. A ``pairs N`` line on stdin makes N more connections to its own IPv4
listener and prints their client ports as a JSON line.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading

OWN = (99, 11, 2)  # the values --own-values sets after connecting


def main() -> None:
    procs, port4, port6 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    flags = set(sys.argv[4:])
    early = socket.create_server(("127.0.0.1", 0)) if "--listen-before-join" in flags else None
    if procs != "-":  # "-": started inside the cgroup already
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    listeners = [
        socket.create_server(("127.0.0.1", 0)),
        socket.create_server(("::1", 0), family=socket.AF_INET6),
    ]
    if early is not None:
        listeners.append(early)
    held: list[socket.socket] = []

    def serve(listener: socket.socket) -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    for listener in listeners:
        threading.Thread(target=serve, args=(listener,), daemon=True).start()
    made: dict[str, int] = {}
    for name, listener in (("own4", listeners[0]), ("own6", listeners[1])):
        sock = socket.create_connection(listener.getsockname()[:2])
        held.append(sock)
        made[name] = sock.getsockname()[1]
    for name, host, port in (("out4", "127.0.0.1", port4), ("out6", "::1", port6)):
        if port:
            sock = socket.create_connection((host, port))
            held.append(sock)
            made[name] = sock.getsockname()[1]
    if "--own-values" in flags:
        sock = socket.create_connection(("127.0.0.1", port4))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in zip((socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT), OWN):
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
        held.append(sock)
        made["own_values"] = sock.getsockname()[1]
    ports = [listener.getsockname()[1] for listener in listeners]
    print(json.dumps({"listen": ports, "made": made}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["pairs"]:
            fresh = [socket.create_connection(listeners[0].getsockname()[:2]) for _ in range(int(words[1]))]
            held.extend(fresh)
            print(json.dumps([s.getsockname()[1] for s in fresh]), flush=True)


if __name__ == "__main__":
    main()
