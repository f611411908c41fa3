"""Peers for the client-library tests: loopback proxies, real servers started in a temp dir, and
the client's own socket found among this process's descriptors (Linux ``/proc/self/fd``)."""

from __future__ import annotations

import http.server
import os
import selectors
import shutil
import signal
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

import ka
from helpers import kernel_values, terminate

linux_only = pytest.mark.skipif(
    ka.capabilities().platform != "linux", reason="reads /proc/self/fd and Linux option numbers"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def own_sockets(peer_port: int) -> list[tuple[int, tuple[int, int, int, int, int]]]:
    """(local port, kernel values) of this process's TCP sockets connected to 127.0.0.1:peer_port."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            dup = os.dup(fd)
        except OSError:  # closed meanwhile (the listing's own descriptor, another thread's)
            continue
        with socket.socket(fileno=dup) as sock:
            try:
                if sock.type != socket.SOCK_STREAM or sock.family != socket.AF_INET:
                    continue
                if sock.getpeername() != ("127.0.0.1", peer_port):
                    continue
                found.append((sock.getsockname()[1], kernel_values(sock)))
            except OSError:  # not connected
                continue
    return found


def client_values(peer_port: int) -> tuple[int, int, int, int, int]:
    """The kernel values of the one client socket this process holds to ``peer_port``."""
    found = own_sockets(peer_port)
    assert len(found) == 1, f"expected one client socket to port {peer_port}, found {found}"
    return found[0][1]


def read_back(port: int, attempts: int = 50) -> tuple[int, int, int, int, int]:
    """``client_values`` for a connection another thread of this process may still be opening."""
    for _ in range(attempts):
        found = own_sockets(port)
        if found:
            return client_values(port)
        time.sleep(0.02)
    return client_values(port)


# -- relaying proxies ---------------------------------------------------------------------------


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Relay bytes both ways until either side closes."""
    with selectors.DefaultSelector() as selector:
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        while True:
            for key, _ in selector.select(timeout=5):
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if not data:
                    return
                key.data.sendall(data)


def _read_head(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("the client closed before sending a full request head")
        head += chunk
    return head


class _Proxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, handler: type[socketserver.BaseRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.clients: list[int] = []  # the client's local ports, in order of arrival
        self.requests_seen: list[str] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _HTTPProxyHandler(socketserver.BaseRequestHandler):
    """CONNECT host:port (a tunnel) and absolute-form requests (forwarded as they are)."""

    server: _Proxy

    def handle(self) -> None:
        self.server.clients.append(self.client_address[1])
        head = _read_head(self.request)
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        self.server.requests_seen.append(f"{method} {target}")
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5) as upstream:
                self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                _pipe(self.request, upstream)
            return
        assert target.startswith("http://"), target
        authority, _, path = target[len("http://") :].partition("/")
        host, port = authority.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as upstream:
            # One origin per client connection in these tests: rewrite the first request, then relay.
            upstream.sendall(head.replace(target.encode(), b"/" + path.encode(), 1))
            _pipe(self.request, upstream)


class _SOCKS5Handler(socketserver.BaseRequestHandler):
    """SOCKS5 (RFC 1928), no authentication, CONNECT to an IPv4 address or a domain name."""

    server: _Proxy

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.request.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the client closed during the SOCKS5 handshake")
            data += chunk
        return data

    def handle(self) -> None:
        self.server.clients.append(self.client_address[1])
        version, n_methods = self._exactly(2)
        assert version == 5
        assert 0 in self._exactly(n_methods), "the client offered no 'no authentication' method"
        self.request.sendall(b"\x05\x00")
        _, command, _, address_type = self._exactly(4)
        assert command == 1, "only CONNECT"
        if address_type == 1:
            host = socket.inet_ntoa(self._exactly(4))
        elif address_type == 3:
            host = self._exactly(self._exactly(1)[0]).decode()
        else:
            raise AssertionError(f"address type {address_type} is not handled here")
        (port,) = struct.unpack("!H", self._exactly(2))
        self.server.requests_seen.append(f"CONNECT {host}:{port}")
        with socket.create_connection((host, port), timeout=5) as upstream:
            bound_host, bound_port = upstream.getsockname()[:2]
            reply = b"\x05\x00\x00\x01" + socket.inet_aton(bound_host) + struct.pack("!H", bound_port)
            self.request.sendall(reply)
            _pipe(self.request, upstream)


_Server = TypeVar("_Server", bound=socketserver.BaseServer)


@contextmanager
def _serving(server: _Server) -> Iterator[_Server]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


class OkHandler(http.server.BaseHTTPRequestHandler):
    """An HTTP/1.1 origin answering every GET with ``ok``; ``/slow`` holds the body back 0.1 s, so
    a client keeps its connection open meanwhile."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        if self.path == "/slow":
            self.wfile.flush()
            time.sleep(0.1)
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def http_origin(context: ssl.SSLContext | None = None) -> Iterator[int]:
    """An ``OkHandler`` server on a free loopback port (HTTPS with ``context``); yields the port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OkHandler)
    server.daemon_threads = True
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    with _serving(server):
        yield int(server.server_address[1])


@contextmanager
def running_http_proxy() -> Iterator[_Proxy]:
    with _serving(_Proxy(_HTTPProxyHandler)) as server:
        yield server


@contextmanager
def running_socks5_proxy() -> Iterator[_Proxy]:
    with _serving(_Proxy(_SOCKS5Handler)) as server:
        yield server


# -- real servers -------------------------------------------------------------------------------


def wait_for_port(port: int, server: subprocess.Popen[bytes], name: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"{name} exited with {server.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                # Nobody listening on a port of the ephemeral range, the kernel may pick that same
                # port as the source: the socket connects to itself (a TCP simultaneous open), and
                # the server would be taken for up while still booting (RabbitMQ: seconds of tries).
                if probe.getsockname() != probe.getpeername():
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on port {port} within {seconds:g} s")


@contextmanager
def redis_server(workdir: Path) -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    port = free_port()
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(workdir), "--logfile", str(workdir / "redis.log")]
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as server:
        try:
            wait_for_port(port, server, "redis-server")
            yield port
        finally:
            terminate(server)


def postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found is None:
        candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
        found = str(candidates[-1]) if candidates else None
    return found


@contextmanager
def postgres_server() -> Iterator[int]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust auth, user postgres); yields its port."""
    initdb, postgres = postgres_bin("initdb"), postgres_bin("postgres")
    if initdb is None or postgres is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    user: str | None = None
    workdir = Path(tempfile.mkdtemp(prefix=f"ka-pg-{os.getpid()}-"))
    try:
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            user = "postgres"
            try:
                shutil.chown(workdir, user=user)
            except LookupError:
                pytest.skip("running as root and there is no user postgres to run PostgreSQL as")
        data = workdir / "data"
        subprocess.run(
            [initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
            check=True,
            capture_output=True,
            user=user,
        )
        port = free_port()
        argv = [postgres, "-D", str(data), "-p", str(port), "-k", str(workdir)]
        argv += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        with subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, user=user
        ) as server:
            try:
                wait_for_port(port, server, "postgres")
                yield port
            finally:
                server.send_signal(signal.SIGINT)  # "fast" shutdown: a throwaway cluster
                server.wait(timeout=20)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def rabbitmq_server(workdir: Path) -> Iterator[int]:
    """RabbitMQ on 127.0.0.1 (user guest/guest), with its own epmd on a free port; yields the AMQP port."""
    server_script = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
    epmd = shutil.which("epmd")
    if not server_script.exists() or epmd is None:
        pytest.skip("RabbitMQ is not installed (Debian package rabbitmq-server)")
    port, epmd_port, dist_port = free_port(), free_port(), free_port()
    config = workdir / "rabbitmq.conf"
    config.write_text(f"listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n")
    env = {
        **os.environ,
        "HOME": str(workdir),
        "RABBITMQ_CONFIG_FILE": str(config),
        "RABBITMQ_NODENAME": f"ka{os.getpid()}@localhost",
        "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
        "RABBITMQ_LOG_BASE": str(workdir / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(workdir / "pid"),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "ERL_EPMD_PORT": str(epmd_port),
    }
    # Our own epmd in the foreground, so the broker does not leave a daemon behind.
    with subprocess.Popen([epmd, "-port", str(epmd_port)], env=env) as epmd_process:
        try:
            wait_for_port(epmd_port, epmd_process, "epmd", 10)
            log = (workdir / "server.log").open("wb")
            with (
                log,
                subprocess.Popen(
                    [str(server_script)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                ) as server,
            ):
                try:
                    try:
                        wait_for_port(port, server, "rabbitmq-server", 60)
                    except RuntimeError as exc:
                        tail = (workdir / "server.log").read_text(errors="replace")[-500:]
                        pytest.skip(f"RabbitMQ did not start here: {exc}: {tail}")
                    yield port
                finally:
                    terminate(server, 15, group=True)
        finally:
            terminate(epmd_process, 15)


@contextmanager
def sshd_server(workdir: Path) -> Iterator[tuple[int, Path]]:
    """OpenSSH's sshd on 127.0.0.1 taking a fresh key for this user; yields (port, client key path)."""
    sshd, keygen = shutil.which("sshd") or "/usr/sbin/sshd", shutil.which("ssh-keygen")
    if not Path(sshd).exists() or keygen is None:
        pytest.skip("OpenSSH is not installed (Debian packages openssh-server, openssh-client)")
    for name in ("host_key", "client_key"):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / name)], check=True)
    (workdir / "authorized_keys").write_bytes((workdir / "client_key.pub").read_bytes())
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1:{port}\nHostKey {workdir / 'host_key'}\n"
        f"AuthorizedKeysFile {workdir / 'authorized_keys'}\nPidFile {workdir / 'sshd.pid'}\n"
        "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nUsePAM no\n"
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    argv = [sshd, "-D", "-e", "-f", str(config)]
    log = (workdir / "sshd.log").open("wb")
    with log, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT) as server:
        try:
            try:
                wait_for_port(port, server, "sshd", 10)
            except RuntimeError as exc:
                pytest.skip(f"sshd did not start here: {exc}: {(workdir / 'sshd.log').read_text()[-300:]}")
            yield port, workdir / "client_key"
        finally:
            terminate(server, 15)


EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
# What every example prints for its policy: KeepAlive(idle=60, interval=10, count=5, user_timeout="auto").
EXAMPLE_VALUES = "KeepAliveSettings(enabled=True, idle=60, interval=10, count=5, user_timeout=110.0)"


def run_example(name: str, *args: object) -> str:
    """Run ``docs/examples/NAME`` with ``args`` and return what it printed; skip without docs/."""
    path = EXAMPLES / name
    if not path.exists():
        pytest.skip(f"{path} is not here (an installed copy of the tests)")
    done = subprocess.run(
        [sys.executable, str(path), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
