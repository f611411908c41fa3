"""ka listen: addresses, checks before exec, the descriptors and variables the command gets, and
real servers started through it (gunicorn, uvicorn, hypercorn, a LISTEN_FDS server) whose own
accepted sockets are read back under load."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import ka
from helpers import kernel_values
from ka.listen import ListenError, create_listeners, fd_names, own_pidfd_id, parse_address, split_command
from server_helpers import (
    EXAMPLES,
    assert_every_connection_has,
    free_port,
    read_back_under_load,
    require_linux_tools,
    running,
    server_env,
    server_tool,
    wait_processes,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
POLICY = ka.KeepAlive(37, 6, 3)
POLICY_TEXT = "idle=37 interval=6 count=3"


def listen_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "ka", "listen", *args]


def ka_listen(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ka", "listen", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=server_env(**(env or {})),
        check=False,
    )


# -- addresses and arguments -----------------------------------------------------------------


def test_parse_address() -> None:
    v4 = parse_address("127.0.0.1:8000")
    assert (v4.family, v4.sockaddr) == (socket.AF_INET, ("127.0.0.1", 8000))
    v6 = parse_address("[::1]:8000")
    assert v6.family == socket.AF_INET6 and v6.sockaddr[:2] == ("::1", 8000)
    assert parse_address("0.0.0.0:0").sockaddr == ("0.0.0.0", 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("/run/app.sock", r"'/run/app.sock' is a Unix socket path: TCP keepalive applies to TCP"),
        ("unix:/run/app.sock", r"is a Unix socket path"),
        ("./app.sock", r"is a Unix socket path"),
        ("localhost:8000", r"'localhost' is not an IP address: ka listen binds addresses, not names"),
        ("::1:8000", r"an IPv6 address goes in brackets: \[::1\]:8000"),
        ("[::g]:8000", r"'::g' is not an IPv6 address"),
        ("127.0.0.1:99999", r"port '99999' is not a TCP port: expected 0 to 65535"),
        ("127.0.0.1:http", r"port 'http' is not a TCP port"),
        ("127.0.0.1", r"'127.0.0.1' is not an address: expected HOST:PORT"),
        (":8000", r"is not an address"),
        ("300.1.1.1:80", r"'300.1.1.1' is not an IP address"),
    ],
)
def test_bad_addresses(text: str, message: str) -> None:
    with pytest.raises(ListenError, match=message):
        parse_address(text)


def test_split_command_and_names() -> None:
    assert split_command(["127.0.0.1:1", "--idle", "3", "--", "srv", "--", "x"]) == (
        ["127.0.0.1:1", "--idle", "3"],
        ["srv", "--", "x"],
    )
    with pytest.raises(ListenError, match="no command"):
        split_command(["127.0.0.1:1"])
    with pytest.raises(ListenError, match="no command after '--'"):
        split_command(["127.0.0.1:1", "--"])
    assert fd_names(None, 2) == ["ka-listen", "ka-listen"]
    assert fd_names(["web"], 2) == ["web", "web"]
    assert fd_names(["a", "b"], 2) == ["a", "b"]
    with pytest.raises(ListenError, match="--fdname was given 2 times for 3 addresses"):
        fd_names(["a", "b"], 3)
    with pytest.raises(ListenError, match="--fdname 'a:b' is not a descriptor name"):
        fd_names(["a:b"], 1)


@linux_only
def test_listeners_carry_the_policy_before_listen() -> None:
    # Connect at once: the first connection queued already has the policy (set before listen()).
    addresses = [parse_address("127.0.0.1:0"), parse_address("[::1]:0")]
    listeners = create_listeners(addresses, ka.KeepAlive(37, 6, 3, user_timeout=12.5))
    try:
        for listener in listeners:
            assert kernel_values(listener) == (1, 37, 6, 3, 12500)
            host = listener.getsockname()[0]
            with socket.create_connection((host, listener.getsockname()[1])):
                accepted, _ = listener.accept()
                with accepted:
                    assert kernel_values(accepted) == (1, 37, 6, 3, 12500)
    finally:
        for listener in listeners:
            listener.close()


@linux_only
def test_a_port_in_use_closes_what_was_made() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        first = free_port()
        before = len(list(Path("/proc/self/fd").iterdir()))
        with pytest.raises(
            ListenError, match=rf"cannot listen on 127.0.0.1:{port}: the address is already in use"
        ):
            create_listeners(
                [parse_address(f"127.0.0.1:{first}"), parse_address(f"127.0.0.1:{port}")], POLICY
            )
        assert len(list(Path("/proc/self/fd").iterdir())) == before
        with socket.create_server(("127.0.0.1", first)):
            pass  # the first listener was closed: its port is free again


# -- the command line: exit code 2 before exec, and what the command gets ----------------------

REPORT = textwrap.dedent(
    """
    import json, os, socket
    fds = sorted(int(f) for f in os.listdir("/proc/self/fd"))
    socks = []
    for fd in range(3, 3 + int(os.environ["LISTEN_FDS"])):
        s = socket.socket(fileno=fd)
        socks.append({
            "fd": fd,
            "name": list(s.getsockname()[:2]),
            "listening": s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
            "keepalive": s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "idle": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "inheritable": os.get_inheritable(fd),
        })
        s.detach()
    env = {k: v for k, v in os.environ.items() if k.startswith(("LISTEN_", "KA_POLICY"))}
    pidfd = os.pidfd_open(os.getpid())
    pidfd_id = os.fstat(pidfd).st_ino  # what sd_listen_fds() compares LISTEN_PIDFDID with (pidfs)
    os.close(pidfd)
    print(json.dumps({"pid": os.getpid(), "fds": fds, "sockets": socks, "env": env, "pidfd_id": pidfd_id}))
    """
)


def _run_report(
    *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], dict[str, object], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ka", "listen", *args, "--", sys.executable, "-c", REPORT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server_env(**(env or {})),
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return proc, json.loads(out), err


@linux_only
def test_the_command_gets_the_sockets_as_fds_3_and_on() -> None:
    proc, report, err = _run_report(
        "127.0.0.1:0", "[::1]:0", "--policy", POLICY_TEXT, "--fdname", "web", "--fdname", "admin"
    )
    assert report["pid"] == proc.pid  # exec in place: LISTEN_PID is the command's own pid
    pidfd_id = {"LISTEN_PIDFDID": str(report["pidfd_id"])} if own_pidfd_id() is not None else {}
    assert report["env"] == {
        "LISTEN_FDS": "2",
        "LISTEN_PID": str(proc.pid),
        "LISTEN_FDNAMES": "web:admin",
        "KA_POLICY": POLICY_TEXT,
        **pidfd_id,
    }
    sockets = report["sockets"]
    assert isinstance(sockets, list)
    assert [
        (s["fd"], s["name"][0], s["listening"], s["keepalive"], s["idle"], s["inheritable"]) for s in sockets
    ] == [
        (3, "127.0.0.1", 1, 1, 37, True),
        (4, "::1", 1, 1, 37, True),
    ]
    # Only 0-2, the two sockets and the listing's own descriptor: ka leaked nothing else.
    fds = report["fds"]
    assert isinstance(fds, list) and fds[:5] == [0, 1, 2, 3, 4] and len(fds) == 6
    assert f"fd 3 (web) listens on 127.0.0.1:{sockets[0]['name'][1]} with {POLICY_TEXT}" in err


@linux_only
def test_the_policy_comes_from_ka_policy_or_flags() -> None:
    _, report, _ = _run_report("127.0.0.1:0", env={"KA_POLICY": "within=30s"})
    assert report["env"]["KA_POLICY"] == str(ka.KeepAlive.within(30))  # type: ignore[index]
    _, report, _ = _run_report("127.0.0.1:0", "--idle", "2m", "--interval", "10s", "--count", "4")
    assert report["env"]["KA_POLICY"] == "idle=120 interval=10 count=4"  # type: ignore[index]
    assert report["sockets"][0]["idle"] == 120  # type: ignore[index]


@linux_only
def test_bad_input_exits_2_before_exec(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    touch = ["--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    with socket.create_server(("127.0.0.1", 0)) as taken:
        used = taken.getsockname()[1]
        cases = [
            (
                ["127.0.0.1:0", *touch],
                "no policy: give --idle, --interval, --count, --user-timeout, --off or --policy, or set "
                "KA_POLICY",
            ),
            (["127.0.0.1:0", "--policy", "idle=soon", *touch], "part 'idle=soon' is not a duration"),
            (["127.0.0.1:0", "--policy", "idle=3", "--idle", "4", *touch], "--policy gives the whole policy"),
            (
                [f"127.0.0.1:{used}", "--idle", "3", *touch],
                f"cannot listen on 127.0.0.1:{used}: the address is already in use",
            ),
            (["/tmp/app.sock", "--idle", "3", *touch], "is a Unix socket path"),
            (
                ["127.0.0.1:0", "--idle", "3", "--", "no-such-server-here"],
                "command 'no-such-server-here' was not found on PATH",
            ),
            (["127.0.0.1:0", "--idle", "3"], "no command: expected ka listen ADDR"),
            (["127.0.0.1:0", "--idle", "3", "--ipv6-only", *touch], "--ipv6-only applies to IPv6 addresses"),
            (["127.0.0.1:0", "--idle", "3", "--backlog", "0", *touch], "--backlog 0 is not a queue length"),
        ]
        for args, message in cases:
            out = ka_listen(*args)
            assert out.returncode == 2, (args, out.stderr)
            assert message in out.stderr, (args, out.stderr)
        out = ka_listen("127.0.0.1:0", *touch, env={"KA_POLICY": "count=1000"})
        assert out.returncode == 2 and "count=1000 is out of range" in out.stderr, out.stderr
    assert not marker.exists()


@linux_only
def test_macos_passes_listeners_untouched_and_says_so() -> None:
    # ka.server.MACOS simulates macOS: the listener is left alone and the user is told why.
    script = textwrap.dedent(
        f"""
        import argparse, sys, ka, ka.listen, ka.server
        args = argparse.Namespace(addresses=["127.0.0.1:0"], program=[sys.executable, "-c", {REPORT!r}],
                                  backlog=16, reuse_port=False, ipv6_only=False, fdname=None)
        ka.listen.run(args, ka.KeepAlive(37, 6, 3), platform=ka.server.MACOS)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    report = json.loads(out.stdout)
    assert report["sockets"][0]["keepalive"] == 0  # untouched
    assert report["env"]["KA_POLICY"] == POLICY_TEXT  # for the in-process glue
    assert "ka listen alone is not enough" in out.stderr and "ka.integrations.gunicorn" in out.stderr


# -- real servers -----------------------------------------------------------------------------


@linux_only
def test_listen_fds_server(tmp_path: Path) -> None:
    require_linux_tools()
    port4, port6 = free_port(), free_port()
    argv = listen_argv(
        f"127.0.0.1:{port4}", f"[::1]:{port6}", "--", sys.executable, str(EXAMPLES / "listen_fds_server.py")
    )
    env = server_env(KA_POLICY=POLICY_TEXT)
    with running(argv, env, tmp_path / "server.log", port4) as proc:
        assert_every_connection_has(read_back_under_load(proc.pid, port4), POLICY)
        assert_every_connection_has(read_back_under_load(proc.pid, port6, host="::1"), POLICY)


@linux_only
def test_gunicorn_gthread_two_workers(tmp_path: Path) -> None:
    require_linux_tools()
    port = free_port()
    argv = listen_argv(
        f"127.0.0.1:{port}",
        "--",
        server_tool("gunicorn"),
        "-w",
        "2",
        "-k",
        "gthread",
        "--no-control-socket",
        "hello_app:wsgi",
    )
    with running(argv, server_env(KA_POLICY=POLICY_TEXT), tmp_path / "gunicorn.log", port) as proc:
        wait_processes(proc.pid, 3)  # the arbiter and two workers (either may accept)
        result = read_back_under_load(proc.pid, port)
    assert_every_connection_has(result, POLICY)


@linux_only
def test_gunicorn_with_bind_fd_3_fails_at_start(tmp_path: Path) -> None:
    # gunicorn adds LISTEN_FDS's descriptors to --bind fd://3: fd 3 twice. Adopting the first
    # closes fd 3 (gunicorn.sock.BaseSocket), so the second dup(3) fails: EBADF. Leave out --bind.
    port = free_port()
    out = subprocess.run(
        listen_argv(
            f"127.0.0.1:{port}",
            "--policy",
            POLICY_TEXT,
            "--",
            server_tool("gunicorn"),
            "--bind",
            "fd://3",
            "--no-control-socket",
            "hello_app:wsgi",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        env=server_env(),
        check=False,
    )
    assert out.returncode != 0
    assert "OSError: [Errno 9] Bad file descriptor" in out.stderr and "create_sockets" in out.stderr


@linux_only
def test_uvicorn_fd_3(tmp_path: Path) -> None:
    require_linux_tools()
    port = free_port()
    argv = listen_argv(
        f"127.0.0.1:{port}",
        "--",
        server_tool("uvicorn"),
        "--fd",
        "3",
        "--log-level",
        "warning",
        "hello_app:asgi",
    )
    with running(argv, server_env(KA_POLICY=POLICY_TEXT), tmp_path / "uvicorn.log", port) as proc:
        assert_every_connection_has(read_back_under_load(proc.pid, port), POLICY)


@linux_only
def test_hypercorn_bind_fd_3(tmp_path: Path) -> None:
    require_linux_tools()
    port = free_port()
    argv = listen_argv(
        f"127.0.0.1:{port}", "--", server_tool("hypercorn"), "--bind", "fd://3", "hello_app:asgi"
    )
    with running(argv, server_env(KA_POLICY=POLICY_TEXT), tmp_path / "hypercorn.log", port) as proc:
        assert_every_connection_has(read_back_under_load(proc.pid, port), POLICY)


# -- edges from issue 19 (section 4.2) and issue 23: exit 2 naming the argument, descriptors,
# LISTEN_PIDFDID, --inherited under another activator, --nodelay and --defer-accept -------------


@linux_only
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["127.0.0.1:\u00b2"], "'127.0.0.1:\u00b2': port '\u00b2' is not a TCP port: expected 0 to 65535"),
        (["127.0.0.1:" + "0" * 30 + "1"], "is not a TCP port"),
        (["[fe80::1%nonexistent0]:8000"], "the zone 'nonexistent0' is not a network interface here"),
        (
            ["127.0.0.1:0", "--backlog", "99999999999"],
            "--backlog 99999999999 is not a queue length: expected 1 to",
        ),
        (["127.0.0.1:0", "--defer-accept", "soon"], "--defer-accept 'soon' is not a duration"),
        (
            ["127.0.0.1:0", "--defer-accept", "99999999999"],
            "--defer-accept '99999999999' is out of range: expected 1 to 2147483647 seconds",
        ),
        (["127.0.0.1:0", "--inherited"], "--inherited takes the listeners it was passed: give no address"),
        (["--inherited"], "--inherited takes the listeners a socket activator passed in LISTEN_FDS"),
        ([], "no address: expected ka listen ADDR"),
    ],
)
def test_bad_arguments_exit_2_naming_them(args: list[str], message: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    out = ka_listen(*args, "--idle", "3", "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')")
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not marker.exists()


@linux_only
def test_too_few_descriptors_is_named_before_anything_is_made(tmp_path: Path) -> None:
    # 8 listeners need 3 + 2 x 8 = 19 descriptors; the limit is 16.
    addresses = " ".join(["127.0.0.1:0"] * 8)
    marker = tmp_path / "ran"
    out = subprocess.run(
        [
            "sh",
            "-c",
            f"ulimit -n 16 && exec {sys.executable} -m ka listen {addresses} --idle 3 -- "
            f"{sys.executable} -c \"open('{marker}', 'w')\"",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=server_env(),
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert (
        "cannot make the listener for 127.0.0.1:0: ka listen needs 19 descriptors for 8 listeners "
        "(3 + 2 x 8) and the limit is 16 (RLIMIT_NOFILE)" in out.stderr
    ), out.stderr
    assert not marker.exists()


@linux_only
def test_a_descriptor_shortage_while_making_listeners_names_the_address() -> None:
    # The limit passes the count but the process holds other descriptors: socket() gets EMFILE.
    script = textwrap.dedent(
        """
        import os, resource, ka
        from ka.listen import ListenError, create_listeners, parse_address
        used = len(os.listdir("/proc/self/fd"))  # one more than open now: listdir's own
        resource.setrlimit(resource.RLIMIT_NOFILE, (used, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        try:
            create_listeners([parse_address("127.0.0.1:0"), parse_address("[::1]:0")], ka.KeepAlive(3))
        except ListenError as exc:
            print(exc)
        print(len(os.listdir("/proc/self/fd")) - used)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    message, leaked = out.stdout.strip().splitlines()
    assert message.startswith(
        "cannot make the listener for [::1]:0: Too many open files [errno 24]: ka listen"
    )
    assert leaked == "0"  # the first listener was closed again


ACCEPT_REPORT = textwrap.dedent(
    """
    import json, os, socket, sys
    listener = socket.socket(fileno=3)
    queued = []
    if "--queued" in sys.argv:  # the connection that woke the activator, made before ka's policy
        conn, _ = listener.accept()
        queued.append(conn.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
    client = socket.create_connection(listener.getsockname()[:2])
    client.sendall(b"x")  # a deferring listener hands a connection over once data arrived
    conn, _ = listener.accept()
    def values(s):
        return {
            "keepalive": s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "idle": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "nodelay": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
            "defer_accept": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT),
        }
    env = {k: v for k, v in os.environ.items() if k.startswith(("LISTEN_", "KA_POLICY"))}
    pidfd = os.pidfd_open(os.getpid())
    print(json.dumps({"listener": values(listener), "accepted": values(conn), "queued": queued, "env": env,
                      "pid": os.getpid(), "pidfd_id": os.fstat(pidfd).st_ino}))
    """
)


@linux_only
def test_nodelay_and_defer_accept_reach_the_listener_and_accepted_sockets() -> None:
    out = ka_listen(
        "127.0.0.1:0",
        "--policy",
        POLICY_TEXT,
        "--nodelay",
        "--defer-accept",
        "5",
        "--",
        sys.executable,
        "-c",
        ACCEPT_REPORT,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["listener"]["nodelay"] == 1 and report["listener"]["defer_accept"] >= 5
    # Read back from the kernel on the accepted socket: the policy and TCP_NODELAY came with it.
    assert report["accepted"]["keepalive"] == 1 and report["accepted"]["idle"] == 37
    assert report["accepted"]["nodelay"] == 1
    plain = json.loads(
        ka_listen("127.0.0.1:0", "--policy", POLICY_TEXT, "--", sys.executable, "-c", ACCEPT_REPORT).stdout
    )
    assert plain["accepted"]["nodelay"] == 0 and plain["listener"]["defer_accept"] == 0


@linux_only
def test_an_inherited_listen_pidfdid_is_replaced_by_the_commands_own() -> None:
    out = ka_listen(
        "127.0.0.1:0",
        "--policy",
        POLICY_TEXT,
        "--",
        sys.executable,
        "-c",
        ACCEPT_REPORT,
        env={"LISTEN_PIDFDID": "12345"},
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    if own_pidfd_id() is None:  # no pidfs: removed, so libsystemd checks LISTEN_PID alone
        assert "LISTEN_PIDFDID" not in report["env"]
    else:
        assert report["env"]["LISTEN_PIDFDID"] == str(report["pidfd_id"]) != "12345"


@linux_only
@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="needs systemd-socket-activate (systemd)"
)
def test_inherited_keeps_the_activators_socket_and_adds_the_policy() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            "systemd-socket-activate",
            "-l",
            f"127.0.0.1:{port}",
            "--fdname",
            "web",
            sys.executable,
            "-m",
            "ka",
            "listen",
            "--inherited",
            "--policy",
            POLICY_TEXT,
            "--nodelay",
            "--",
            sys.executable,
            "-c",
            ACCEPT_REPORT,
            "--queued",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server_env(),
    )
    try:
        # systemd-socket-activate starts its command at the first connection.
        deadline = time.monotonic() + 30
        while True:
            try:
                wake = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "systemd-socket-activate did not listen"
                time.sleep(0.05)
        with wake:
            out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["env"]["LISTEN_FDS"] == "1" and report["env"]["LISTEN_FDNAMES"] == "web"
    assert report["env"]["LISTEN_PID"] == str(report["pid"])
    assert report["listener"]["keepalive"] == 1 and report["listener"]["idle"] == 37
    assert report["accepted"] == {"keepalive": 1, "idle": 37, "nodelay": 1, "defer_accept": 0}
    assert report["queued"] == [0]  # made before ka's policy: keeps what it had, as documented
    assert f"fd 3 (web) listens on 127.0.0.1:{port} with {POLICY_TEXT}" in err
    assert "1 connection(s) already queued on fd 3" in err


def test_an_inherited_descriptor_that_is_no_tcp_listener_is_said_to_be_passed_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ka.listen import _print_listening

    _print_listening([3, 4], ["web", "admin"], ["127.0.0.1:8000", None], ka.KeepAlive(idle=37))
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "ka listen: fd 3 (web) listens on 127.0.0.1:8000 with idle=37",
        "ka listen: fd 4 (admin) is no TCP listener: passed on untouched",
    ]
