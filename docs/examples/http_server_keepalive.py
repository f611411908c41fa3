"""A threaded http.server whose every connection carries a keepalive policy (ka.server mixin)."""

from __future__ import annotations

import http.client
import http.server
import threading

import ka
import ka.server

POLICY = ka.KeepAlive(idle=60, interval=10, count=5, user_timeout="auto")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # persistent connections: the case keepalive is for

    def do_GET(self) -> None:
        # The server's side of this connection, read back from the kernel.
        settings = ka.read(self.connection)
        body = f"{settings.matches(POLICY)} {settings.idle}/{settings.interval}/{settings.count}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the example's output to what it checks


class Server(ka.server.KeepAliveServerMixin, http.server.ThreadingHTTPServer):
    keepalive = POLICY


def main() -> None:
    with Server(("127.0.0.1", 0), Handler) as server:
        assert server.keepalive_plan is not None
        print("mode:", server.keepalive_plan.mode)  # "inherit" on Linux, "per-accept" on macOS
        threading.Thread(target=server.serve_forever, daemon=True).start()
        host, port = server.server_address[:2]
        client = http.client.HTTPConnection(str(host), port, timeout=5)
        for _ in range(2):  # two requests on one persistent connection
            client.request("GET", "/")
            answer = client.getresponse().read().decode().strip()
            print("server side carries the policy:", answer)
            assert answer == "True 60/10/5", answer
        client.close()
        server.shutdown()


if __name__ == "__main__":
    main()
