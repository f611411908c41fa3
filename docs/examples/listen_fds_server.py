"""A server that takes its listening sockets from socket activation (``ka listen``, systemd).

    ka listen 127.0.0.1:8000 --policy "idle=60 interval=10 count=5" -- python listen_fds_server.py

It reads ``LISTEN_PID`` and ``LISTEN_FDS`` as sd_listen_fds(3) does and serves HTTP/1.1 on every
descriptor from 3 on. The kernel copies the listener's keepalive options into each accepted
socket (Linux, FreeBSD), so the server itself sets nothing.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SD_LISTEN_FDS_START = 3


def listen_fds() -> list[socket.socket]:
    """The sockets passed to this process, or [] when none were (or they were meant for another)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(os.environ.get("LISTEN_FDS", "0"))
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for our own children
    return [socket.socket(fileno=fd) for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)]


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep connections open between requests

    def do_GET(self) -> None:
        body = b"hello\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(listener: socket.socket) -> None:
    server = ThreadingHTTPServer(listener.getsockname()[:2], Hello, bind_and_activate=False)
    server.socket.close()
    server.socket = listener  # already bound and listening, with the policy
    server.serve_forever()


def main() -> int:
    listeners = listen_fds()
    if not listeners:
        print("no sockets passed: run me under ka listen (or a systemd socket unit)", file=sys.stderr)
        return 2
    threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in listeners]
    for thread in threads:
        thread.start()
    print(f"serving on {', '.join(str(s.getsockname()[:2]) for s in listeners)}", flush=True)
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
