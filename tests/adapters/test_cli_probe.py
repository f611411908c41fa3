"""``ka probe``: usage errors, the JSON contract, Ctrl-C, the progress line on a terminal, and
``ka probe --serve`` (its hold limit and SIGTERM), run as child processes on loopback."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ka.cli import EXIT_INTERRUPTED, EXIT_USAGE, main

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ka probe is Linux only")

KA = [sys.executable, "-m", "ka", "probe"]
CONTRACT = [
    "target",
    "idle_timeout",
    "max",
    "death",
    "probes_refresh",
    "recommended_policy",
    "heartbeat_interval",
]


@pytest.fixture(scope="module")
def far_end() -> Iterator[int]:
    with subprocess.Popen(
        [*KA, "--serve", "0", "--bind", "127.0.0.1"], stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        port = int(child.stdout.readline().split("127.0.0.1:")[1].split()[0])
        try:
            yield port
        finally:
            child.send_signal(signal.SIGTERM)
            assert child.wait(timeout=10) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give the HOST:PORT of a service"),
        (["localhost"], "expected HOST:PORT"),
        (["h:99999"], "the port must be 1-65535"),
        (["h:1", "--max", "soon"], "--max 'soon' is not a duration"),
        (["h:1", "--max", "3s"], "max must be at least 5 seconds"),
        (["h:1", "--precision", "5 percent"], "not a duration"),
        (["h:1", "--connections", "4"], "connections must be between 7 and 1000"),
        (["h:1", "--payload", ""], "--payload is empty"),
        (["h:1", "--bind", "127.0.0.1"], "--bind and --hold go with --serve"),
        (["h:1", "--serve", "7000"], "--serve makes this the far end"),
        (["--serve", "70000"], "port must be 0-65535"),
        (["--serve", "0", "--hold", "0"], "--hold must be a positive duration"),
        (["no-such-host.invalid:80", "--max", "5"], "cannot resolve 'no-such-host.invalid'"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", *argv, "--json"]) == EXIT_USAGE
    error = json.loads(capsys.readouterr().out)["error"]
    assert message in error["message"] and error["exit_code"] == EXIT_USAGE


def test_serve_names_an_address_it_cannot_listen_on(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        causes = {"127.0.0.1": "Address already in use", "192.0.2.1": "Cannot assign requested"}
        for bind, cause in causes.items():
            assert main(["probe", "--serve", str(port), "--bind", bind, "--json"]) == EXIT_USAGE
            message = json.loads(capsys.readouterr().out)["error"]["message"]
            assert message.startswith(f"--serve {port} --bind {bind}: cannot listen there: {cause}"), message


@pytest.mark.slow
def test_json_keeps_the_contract(far_end: int) -> None:
    done = subprocess.run(
        [*KA, f"127.0.0.1:{far_end}", "--max", "5", "--json"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no progress line when stderr is not a terminal
    data = json.loads(done.stdout)
    assert list(data)[: len(CONTRACT)] == CONTRACT
    assert data["target"] == f"127.0.0.1:{far_end}" and data["max"] == 5
    assert data["idle_timeout"] is None and data["death"] is None and data["probes_refresh"] is None
    assert data["recommended_policy"] == "idle=3 interval=1 count=3 user_timeout=6"


@pytest.mark.slow
def test_text_output(far_end: int) -> None:
    done = subprocess.run([*KA, f"127.0.0.1:{far_end}", "--max", "5"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"127.0.0.1:{far_end}: no idle timeout up to 5 s (--max)"
    assert '               export KA_POLICY="idle=3 interval=1 count=3 user_timeout=6"' in lines


def test_ctrl_c_prints_what_is_known(far_end: int) -> None:
    with subprocess.Popen(
        [*KA, f"127.0.0.1:{far_end}", "--precision", "1s", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        time.sleep(3)  # past the first test at 1.5 s idle
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=10)
    assert child.returncode == EXIT_INTERRUPTED, err
    data = json.loads(out)
    assert data["complete"] is False and data["idle_timeout"] is None
    assert data["idle_timeout_low"] >= 1.5 and data["probes"] >= 1
    assert data["recommended_policy"] is None and "cut short" in data["advice"]


def test_sigterm_ends_the_probe_like_ctrl_c(far_end: int) -> None:
    with subprocess.Popen(
        [*KA, f"127.0.0.1:{far_end}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        time.sleep(2)
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=10)
    assert child.returncode == EXIT_INTERRUPTED
    assert ": interrupted: the flow outlived" in out.splitlines()[0]


@pytest.mark.slow
def test_a_progress_line_on_a_terminal(far_end: int) -> None:
    """stderr on a pseudo-terminal: one line rewritten in place, cleared at the end."""
    leader, follower = pty.openpty()
    try:
        with subprocess.Popen(
            [*KA, f"127.0.0.1:{far_end}", "--max", "5"], stdout=subprocess.PIPE, stderr=follower, text=True
        ) as child:
            os.close(follower)
            follower = -1
            shown = b""
            while child.poll() is None or select.select([leader], [], [], 0)[0]:
                if select.select([leader], [], [], 0.2)[0]:
                    try:
                        shown += os.read(leader, 4096)
                    except OSError:
                        break
            child.communicate()
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    text = shown.decode()
    assert child.returncode == 0
    assert "\r" in text and "waiting for the test after 5.5 s idle" in text and "s left" in text
    assert text.rstrip(" ").endswith("\r")  # cleared before the result is printed


def test_serve_holds_a_connection_until_its_hold_runs_out() -> None:
    with subprocess.Popen(
        [*KA, "--serve", "0", "--bind", "127.0.0.1", "--hold", "1"], stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        port = int(child.stdout.readline().split("127.0.0.1:")[1].split()[0])
        try:
            with (
                socket.create_connection(("127.0.0.1", port)) as quiet,
                socket.create_connection(("127.0.0.1", port)) as talking,
            ):
                quiet.settimeout(5)
                talking.setblocking(False)
                started = time.monotonic()
                while time.monotonic() - started < 1.8:  # payload every 0.3 s keeps this one
                    talking.send(b"x")
                    time.sleep(0.3)
                assert quiet.recv(1) == b""  # closed after 1 s without payload, nothing sent first
                assert 1.0 <= time.monotonic() - started <= 3.0
                talking.send(b"x")
                time.sleep(0.2)
                with pytest.raises(BlockingIOError):
                    talking.recv(1)  # still open: nothing to read, no end of file
        finally:
            child.send_signal(signal.SIGTERM)
            assert child.wait(timeout=10) == 0


def test_serve_outlives_running_out_of_descriptors() -> None:
    """More connections than the far end may open descriptors (EMFILE on accept): it keeps those it
    holds and takes the queued ones as descriptors free up, instead of ending and dropping every
    connection (which a probe would read as the path resetting its flows)."""
    import resource

    limit = 24
    with subprocess.Popen(
        [*KA, "--serve", "0", "--bind", "127.0.0.1"],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)),
    ) as child:
        assert child.stdout is not None
        port = int(child.stdout.readline().split("127.0.0.1:")[1].split()[0])
        clients: list[socket.socket] = []
        try:
            clients += [socket.create_connection(("127.0.0.1", port)) for _ in range(limit + 8)]
            time.sleep(1.5)
            assert child.poll() is None, "the far end ended"
            held = len(os.listdir(f"/proc/{child.pid}/fd"))
            assert held == limit  # every descriptor it may have: the rest wait in the listen queue
            for client in clients[:8]:
                client.setblocking(False)
                with pytest.raises(BlockingIOError):
                    client.recv(1)  # still open at the far end: no end of file, no reset
            for client in clients[:10]:
                client.close()
            deadline = time.monotonic() + 5
            while len(os.listdir(f"/proc/{child.pid}/fd")) < limit - 2 and time.monotonic() < deadline:
                time.sleep(0.1)  # the queued ones are taken as descriptors free up
            assert child.poll() is None and len(os.listdir(f"/proc/{child.pid}/fd")) >= limit - 2
        finally:
            for client in clients:
                client.close()
            child.send_signal(signal.SIGTERM)
            assert child.wait(timeout=10) == 0


def test_more_connections_than_descriptors_is_a_usage_error_before_any_connection() -> None:
    import resource

    out = subprocess.run(
        [*KA, "127.0.0.1:1", "--connections", "200", "--json"],  # port 1: nothing is ever reached
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)),
    )
    assert out.returncode == EXIT_USAGE, out.stderr
    message = json.loads(out.stdout)["error"]["message"]
    assert message.startswith("connections=200 needs 200 descriptors at once, and this process may open ")
    assert "(RLIMIT_NOFILE 64" in message
    assert message.endswith("raise it (ulimit -n) or use fewer connections")
