"""ka.integrations.gunicorn, .uvicorn and .hypercorn: each server started the documented way as a
real process with a real app, driven by wrk, and every accepted connection read back from the
server's own sockets. ``keepalive_platform = ka.server.MACOS`` runs the per-accept path for real."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

import ka
import ka.server
from server_helpers import (
    EXAMPLES,
    accepted_connections,
    assert_every_connection_has,
    free_port,
    ka_show,
    read_back_under_load,
    require_linux_tools,
    require_servers,
    running,
    server_env,
    server_tool,
    wait_processes,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads sockets with ka show (Linux)"
)

POLICY = ka.KeepAlive(37, 6, 3)
POLICY_TEXT = str(POLICY)
EXAMPLE_POLICY = ka.KeepAlive.parse("idle=60 interval=10 count=5 user_timeout=auto")
UVICORN_WORKER = "uvicorn_worker.UvicornWorker"


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_linux_tools()
    require_servers()  # skips without them; scripts/test.sh installs them


def listeners(pid: int, port: int) -> list[dict[str, object]]:
    """The keepalive values of the listening sockets on ``port`` of process ``pid``."""
    return [c["keepalive"] for c in ka_show(pid, "listen") if c["local"]["port"] == port]


def gunicorn_argv(config: str, port: int, *args: str) -> list[str]:
    """gunicorn with this config, bound to 127.0.0.1:PORT, no control socket (tests run in parallel)."""
    return [server_tool("gunicorn"), "-c", config, "--no-control-socket", "-b", f"127.0.0.1:{port}", *args]


def uvicorn_argv(port: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "ka.integrations.uvicorn", "hello_app:asgi", "--port", str(port), *args]


def macos_config(tmp_path: Path, **settings: str) -> Path:
    """A gunicorn config file: the example's hooks and policy, macOS simulated (per-accept)."""
    lines = [
        "import ka.server",
        "from gunicorn_conf import *",
        "from gunicorn_conf import keepalive_policy",
        "keepalive_platform = ka.server.MACOS",
        *(f"{key} = {value!r}" for key, value in settings.items()),
    ]
    path = tmp_path / "macos_conf.py"
    path.write_text("\n".join(lines) + "\n")
    return path


# -- gunicorn ---------------------------------------------------------------------------------


def test_gunicorn_config_module_gthread(tmp_path: Path) -> None:
    port = free_port()
    argv = gunicorn_argv(
        "python:ka.integrations.gunicorn", port, "-w", "2", "-k", "gthread", "hello_app:wsgi"
    )
    with running(argv, server_env(KA_POLICY=POLICY_TEXT), tmp_path / "log", port) as proc:
        wait_processes(proc.pid, 3)
        assert_every_connection_has(read_back_under_load(proc.pid, port), POLICY)
        assert listeners(proc.pid, port)[0]["idle"] == 37  # on Linux the listener carries it
        # One info line through gunicorn's own log, as ka listen prints one (issue 23).
        log = (tmp_path / "log").read_text()
        assert (
            f"[INFO] ka: keepalive {POLICY_TEXT} on 127.0.0.1:{port}, inherited by accepted connections"
            in log
        ), log


def test_gunicorn_own_config_file_uvicorn_worker(tmp_path: Path) -> None:
    # The example config names keepalive_policy; KA_POLICY is not set.
    port = free_port()
    argv = gunicorn_argv(str(EXAMPLES / "gunicorn_conf.py"), port, "-k", UVICORN_WORKER, "hello_app:asgi")
    with running(argv, server_env(), tmp_path / "log", port) as proc:
        assert_every_connection_has(read_back_under_load(proc.pid, port), EXAMPLE_POLICY)


@pytest.mark.parametrize("worker", ["gthread", UVICORN_WORKER])
def test_gunicorn_per_accept(tmp_path: Path, worker: str) -> None:
    port = free_port()
    app = "hello_app:asgi" if worker == UVICORN_WORKER else "hello_app:wsgi"
    argv = gunicorn_argv(str(macos_config(tmp_path)), port, "-w", "2", "-k", worker, app)
    with running(argv, server_env(), tmp_path / "log", port) as proc:
        tree = wait_processes(proc.pid, 3)
        assert_every_connection_has(read_back_under_load(proc.pid, port), EXAMPLE_POLICY)
        for pid in tree:  # per-accept: ka never touched a listener
            assert all(lst["enabled"] is False for lst in listeners(pid, port))


def test_gunicorn_per_accept_sync_worker(tmp_path: Path) -> None:
    # The sync worker answers one request per connection and closes it: hold idle connections
    # instead, which each worker accepts and then waits on for a request.
    port = free_port()
    argv = gunicorn_argv(str(macos_config(tmp_path)), port, "-w", "2", "-k", "sync", "hello_app:wsgi")
    with running(argv, server_env(), tmp_path / "log", port) as proc:
        tree = wait_processes(proc.pid, 3)
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        try:
            mine = {c.getsockname()[1] for c in clients}
            for _ in range(50):
                accepted, _ = accepted_connections(tree, port)
                if {a.peer_port for a in accepted} == mine:
                    break
            assert {a.peer_port for a in accepted} == mine
            assert {(a.enabled, a.idle, a.interval, a.probes) for a in accepted} == {(True, 60, 10, 5)}
        finally:
            for client in clients:
                client.close()


def test_gunicorn_reuse_port(tmp_path: Path) -> None:
    # Every worker binds its own listener (after when_ready): post_fork gives each the policy.
    port = free_port()
    argv = gunicorn_argv(
        "python:ka.integrations.gunicorn", port, "--reuse-port", "-w", "2", "-k", "gthread", "hello_app:wsgi"
    )
    with running(argv, server_env(KA_POLICY=POLICY_TEXT), tmp_path / "log", port) as proc:
        tree = wait_processes(proc.pid, 3)
        assert_every_connection_has(read_back_under_load(proc.pid, port), POLICY)
        worker_listeners = [lst for pid in tree[1:] for lst in listeners(pid, port)]
        assert len(worker_listeners) == 2 and all(lst["idle"] == 37 for lst in worker_listeners)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            None,
            "Error: ka.integrations.gunicorn: no keepalive policy was given and the environment variable "
            "KA_POLICY is not set",
        ),
        (
            "idle=soon",
            "Error: ka.integrations.gunicorn: environment variable KA_POLICY: keepalive policy "
            "'idle=soon': part 'idle=soon' is not a duration",
        ),
    ],
)
def test_gunicorn_bad_policy_stops_it_before_binding(value: str | None, message: str) -> None:
    port = free_port()
    env = server_env() if value is None else server_env(KA_POLICY=value)
    out = subprocess.run(
        gunicorn_argv("python:ka.integrations.gunicorn", port, "hello_app:wsgi"),
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert out.returncode == 1 and message in out.stderr, out.stderr
    assert "Listening at" not in out.stderr


def test_gunicorn_config_module_sets_only_its_hooks() -> None:
    # gunicorn reads every module-level name of a config module as a setting.
    import gunicorn.config

    import ka.integrations.gunicorn as module

    settings = set(
        gunicorn.config.KNOWN_SETTINGS_BY_NAME
        if hasattr(gunicorn.config, "KNOWN_SETTINGS_BY_NAME")
        else (s.name for s in gunicorn.config.KNOWN_SETTINGS)
    )
    assert set(vars(module)) & settings == {"on_starting", "when_ready", "on_reload", "post_fork"}


# -- uvicorn ----------------------------------------------------------------------------------


def test_uvicorn_cli_workers(tmp_path: Path) -> None:
    port = free_port()
    argv = uvicorn_argv(port, "--workers", "2", "--log-level", "warning")
    with running(argv, server_env(KA_POLICY=POLICY_TEXT), tmp_path / "log", port) as proc:
        assert_every_connection_has(read_back_under_load(proc.pid, port), POLICY)


def test_uvicorn_logs_what_it_set(tmp_path: Path) -> None:
    port = free_port()
    with running(uvicorn_argv(port), server_env(KA_POLICY=POLICY_TEXT), tmp_path / "log", port):
        log = (tmp_path / "log").read_text()
    assert (
        f"INFO:     ka: keepalive {POLICY_TEXT} on 127.0.0.1:{port}, inherited by accepted connections" in log
    )


def test_uvicorn_cli_reload(tmp_path: Path) -> None:
    port = free_port()
    argv = uvicorn_argv(port, "--reload", "--reload-dir", str(tmp_path), "--keepalive-policy", POLICY_TEXT)
    with running(argv, server_env(KA_POLICY="idle=1"), tmp_path / "log", port) as proc:  # the flag wins
        assert_every_connection_has(read_back_under_load(proc.pid, port), POLICY)


@pytest.mark.parametrize("example", ["uvicorn_run.py", "hypercorn_serve.py"])
def test_server_started_from_code(tmp_path: Path, example: str) -> None:
    """The documented examples that start uvicorn or hypercorn from Python code."""
    port = free_port()
    argv = [sys.executable, str(EXAMPLES / example), str(port)]
    with running(argv, server_env(), tmp_path / "log", port) as proc:
        assert_every_connection_has(read_back_under_load(proc.pid, port), EXAMPLE_POLICY)


def test_uvicorn_per_accept_through_the_protocol(tmp_path: Path) -> None:
    # One process (Server.run with the socket), uvloop: connection_made applies the policy.
    port = free_port()
    script = (
        "import ka.server, ka.integrations.uvicorn as k; "
        f"k.run('hello_app:asgi', port={port}, loop='uvloop', log_level='warning', "
        f"keepalive={POLICY_TEXT!r}, keepalive_platform=ka.server.MACOS)"
    )
    with running([sys.executable, "-c", script], server_env(), tmp_path / "log", port) as proc:
        assert_every_connection_has(read_back_under_load(proc.pid, port), POLICY)
        assert listeners(proc.pid, port)[0]["enabled"] is False


def test_uvicorn_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    import ka.integrations.uvicorn as k

    monkeypatch.delenv("KA_POLICY", raising=False)
    with pytest.raises(
        ValueError, match=r"uds='/tmp/x\.sock' is a Unix socket: TCP keepalive applies to TCP only"
    ):
        k.Config("hello_app:asgi", uds="/tmp/x.sock", keepalive=POLICY)
    with pytest.raises(
        ValueError, match="no keepalive policy was given and the environment variable KA_POLICY"
    ):
        k.Config("hello_app:asgi")
    out = subprocess.run(
        [sys.executable, "-m", "ka.integrations.uvicorn", "hello_app:asgi", "--keepalive-policy", "count=x"],
        capture_output=True,
        text=True,
        timeout=60,
        env=server_env(),
        check=False,
    )
    assert out.returncode == 2 and "part 'count=x' is not a whole number of probes" in out.stderr, out.stderr


# -- hypercorn --------------------------------------------------------------------------------


def test_hypercorn_cli_workers(tmp_path: Path) -> None:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "ka.integrations.hypercorn",
        "hello_app:asgi",
        "--bind",
        f"127.0.0.1:{port}",
        "-w",
        "2",
    ]
    with running(argv, server_env(KA_POLICY=POLICY_TEXT), tmp_path / "log", port) as proc:
        wait_processes(proc.pid, 3)
        assert_every_connection_has(read_back_under_load(proc.pid, port), POLICY)


def test_hypercorn_cli_keepalive_policy_and_log(tmp_path: Path) -> None:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "ka.integrations.hypercorn",
        "hello_app:asgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--keepalive-policy",
        POLICY_TEXT,
    ]
    with running(argv, server_env(KA_POLICY="idle=1"), tmp_path / "log", port) as proc:  # the flag wins
        assert_every_connection_has(read_back_under_load(proc.pid, port), POLICY)
        log = (tmp_path / "log").read_text()
    assert f"[INFO] ka: keepalive {POLICY_TEXT} on 127.0.0.1:{port}, inherited by accepted connections" in log


def test_hypercorn_cli_help_and_bad_policy() -> None:
    def hypercorn(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ka.integrations.hypercorn", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=server_env(),
            check=False,
        )

    out = hypercorn("--help")
    assert out.returncode == 0 and out.stdout.startswith("usage: python -m ka.integrations.hypercorn ")
    assert "hypercorn.py" not in out.stdout and "--keepalive-policy POLICY" in out.stdout
    out = hypercorn("hello_app:asgi", "--keepalive-policy", "count=x")
    assert out.returncode == 2 and "--keepalive-policy: keepalive policy 'count=x'" in out.stderr, out.stderr


def test_hypercorn_config_file_and_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ka.integrations.hypercorn as k
    from helpers import kernel_values

    monkeypatch.delenv("KA_POLICY", raising=False)
    conf = tmp_path / "conf.toml"
    conf.write_text(
        f'bind = ["127.0.0.1:0", "unix:{tmp_path / "h.sock"}"]\nkeepalive_policy = "{POLICY_TEXT}"\n'
    )
    config = k.Config.from_toml(conf)
    assert isinstance(config, k.Config)
    sockets = config.create_sockets()
    tcp, unix = sockets.insecure_sockets
    try:
        assert kernel_values(tcp)[:4] == (1, 37, 6, 3)  # before listen(): hypercorn's workers listen
        assert not tcp.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        assert unix.family == socket.AF_UNIX  # left alone
    finally:
        tcp.close()
        unix.close()
    config.keepalive_platform = ka.server.MACOS
    with pytest.raises(NotImplementedError, match="hypercorn has no hook between accept and its connection"):
        config.create_sockets()
    with pytest.raises(ValueError, match="no keepalive policy was given"):
        k.Config().create_sockets()
