"""A plain echo server for the live tests: stdlib sockets only, no ka, nothing prepared for it.

Listens on 127.0.0.1 and (where available) ::1, prints both ports on one line, echoes whatever
each accepted connection sends, and exits when its stdin closes.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import sys


def main() -> None:
    sel = selectors.DefaultSelector()
    listeners = [socket.create_server(("127.0.0.1", 0))]
    with contextlib.suppress(OSError):  # no IPv6 loopback here
        listeners.append(socket.create_server(("::1", 0), family=socket.AF_INET6))
    print(" ".join(str(sock.getsockname()[1]) for sock in listeners), flush=True)
    for sock in listeners:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, "listener")
    sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
    while True:
        for key, _ in sel.select():
            if key.data == "stdin":
                if not sys.stdin.readline():
                    return
            elif key.data == "listener":
                assert isinstance(key.fileobj, socket.socket)
                conn, _ = key.fileobj.accept()
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ, "conn")
            else:
                assert isinstance(key.fileobj, socket.socket)
                conn = key.fileobj
                try:
                    data = conn.recv(65536)
                except ConnectionError:
                    data = b""
                if not data:
                    sel.unregister(conn)
                    conn.close()
                else:
                    conn.setblocking(True)
                    conn.sendall(data)
                    conn.setblocking(False)


if __name__ == "__main__":
    main()
