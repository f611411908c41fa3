"""``ka.probe`` on loopback (no root): against ``ka probe --serve``, against services that refuse
or close at once, and interrupted at any moment: no descriptor and no socket may be left behind.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import ka
import ka.probe
from ka.probe import Interrupted, Precision, ProbeError, Progress

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ka probe is Linux only"),
    pytest.mark.skipif(shutil.which("ss") is None, reason="the ss command (iproute2) is missing"),
]

QUICK = Precision(1, 0)  # tests at 1.5, 2.5, 3.5 ... s idle: probes go out within seconds


@pytest.fixture(scope="module")
def far_end() -> Iterator[int]:
    """``ka probe --serve 0`` on 127.0.0.1 in a child process; its port."""
    with subprocess.Popen(
        [sys.executable, "-m", "ka", "probe", "--serve", "0", "--bind", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None and child.stderr is not None
            banner = child.stdout.readline()
            assert "holding idle connections on 127.0.0.1:" in banner, banner + child.stderr.read()
            yield int(banner.split("127.0.0.1:")[1].split()[0])
        finally:
            child.send_signal(signal.SIGTERM)  # ends like Ctrl-C: every connection closed, exit 0
            assert child.wait(timeout=10) == 0


def descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def client_sockets(port: int) -> str:
    """Every TCP socket toward ``port`` in any state (FIN_WAIT, TIME_WAIT included)."""
    return subprocess.run(
        ["ss", "-Htan", f"dport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.slow
def test_an_open_path_has_no_timeout_below_max(far_end: int) -> None:
    before = descriptors()
    seen: list[Progress] = []
    # The module is callable; type checkers do not know it (typed code calls ka.probe.measure).
    result = ka.probe(f"127.0.0.1:{far_end}", max=5, progress=seen.append)  # type: ignore[operator]
    assert result.complete and result.idle_timeout is None and result.death is None
    assert result.idle_timeout_low is not None and result.idle_timeout_low >= 5
    assert result.recommended == ka.KeepAlive.for_middlebox(5) == ka.KeepAlive.for_path(result)
    assert result.connections <= 24 and result.probes == 1
    assert 5 <= result.elapsed < 8
    assert any("the test after 5.5 s idle" in progress.waiting_for for progress in seen)
    assert descriptors() == before
    assert client_sockets(far_end) == ""


def test_a_refused_connection_is_a_probe_error() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, never listening: the connect is refused
        before = descriptors()
        with pytest.raises(ProbeError, match=r"cannot connect to 127\.0\.0\.1") as info:
            ka.probe.measure(f"127.0.0.1:{port}", max=5)
        assert descriptors() == before
    assert info.value.errno == errno.ECONNREFUSED


def test_a_service_that_closes_at_once_is_a_probe_error() -> None:
    before = descriptors()
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def close_everything() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            conn.close()

    thread = threading.Thread(target=close_everything)
    thread.start()
    try:
        with pytest.raises(ProbeError, match=r"closed a connection 0\.\d\d s after it opened \(a FIN\)"):
            ka.probe.measure(listener.getsockname(), max=5)
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert descriptors() == before


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        ("localhost", ValueError, "expected HOST:PORT"),
        ("::1:80", ValueError, "IPv6 address in brackets"),
        ("[::1]80", ValueError, r"expected \[IPV6\]:PORT"),
        ("host:http", ValueError, "the port 'http' is not a number"),
        ("host:0", ValueError, "the port must be 1-65535"),
        (":80", ValueError, "the host is empty"),
        (80, TypeError, "target must be 'HOST:PORT'"),
    ],
)
def test_bad_targets_are_refused_before_any_connection(target: object, error: type, message: str) -> None:
    before = descriptors()
    with pytest.raises(error, match=message):
        ka.probe.measure(target, max=5)  # type: ignore[arg-type]
    assert descriptors() == before


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"max": 2}, "max must be at least 5 seconds"),
        ({"max": -1}, "max must be positive"),
        ({"precision": "5x"}, "not a duration"),
        ({"connections": 3}, "connections must be between"),
        ({"payload": b""}, "payload must be non-empty"),
    ],
)
def test_bad_settings_are_refused_before_any_connection(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ka.probe.measure("127.0.0.1:9", **arguments)  # type: ignore[arg-type]


def test_an_unknown_host_is_refused() -> None:
    with pytest.raises(socket.gaierror, match=r"cannot resolve 'no-such-host\.invalid'"):
        ka.probe.measure("no-such-host.invalid:80", max=5)


@pytest.mark.parametrize("calls", [1, 2, 5, 20, 40, 60])
def test_an_interruption_from_the_progress_callback_closes_everything(far_end: int, calls: int) -> None:
    """The n-th progress call raises KeyboardInterrupt: during the connects, a wait, a test."""
    before = descriptors()
    seen = 0

    def interrupt(progress: Progress) -> None:
        nonlocal seen
        seen += 1
        if seen == calls:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as info:
        ka.probe.measure(f"127.0.0.1:{far_end}", max=20, precision=QUICK, progress=interrupt)
    assert isinstance(info.value, KeyboardInterrupt)
    assert info.value.result.complete is False
    assert descriptors() == before
    assert client_sockets(far_end) == ""


@pytest.mark.slow
def test_sigint_at_any_moment_leaves_nothing_behind(far_end: int) -> None:
    """SIGINT delivered at random moments (connects, waits, probes in flight, the cleanup). The
    timer starts at measure's first reading of its clock, so the signal lands inside the call."""
    rng = random.Random(20)
    before = descriptors()
    for delay in [0.0, 0.001, 0.01, 0.05, *(rng.uniform(0.1, 3.0) for _ in range(8))]:
        timer = threading.Timer(delay, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))

        def clock(timer: threading.Timer = timer) -> float:
            if not timer.is_alive() and not timer.finished.is_set():
                timer.start()
            return time.monotonic()

        started = time.monotonic()
        with pytest.raises(Interrupted) as info:
            ka.probe.measure(f"127.0.0.1:{far_end}", max=8, precision=QUICK, clock=clock)
        timer.join()
        assert time.monotonic() - started < 5, "the run ended by itself, not by the interruption"
        assert info.value.result.complete is False
        assert descriptors() == before, f"after SIGINT at {delay:.3f} s"
        assert client_sockets(far_end) == "", f"after SIGINT at {delay:.3f} s"


def test_connections_are_opened_a_few_at_a_time(far_end: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of connects can overflow the service's accept queue: a connection whose last
    handshake ACK was dropped there is established here only, and its first probe meets a reset
    (seen with socat's default backlog of 5). The first wave is paced instead."""
    from ka.probe import lines, run

    starts: list[float] = []
    original = lines.Connection.start

    def start(self: lines.Connection) -> None:
        starts.append(time.monotonic())
        original(self)

    monkeypatch.setattr(lines.Connection, "start", start)
    with pytest.raises(Interrupted):
        ka.probe.measure(
            f"127.0.0.1:{far_end}",
            max=20,
            precision=QUICK,  # a first wave of 20 lines
            progress=lambda progress: None if progress.elapsed < 1.2 else signal.raise_signal(signal.SIGINT),
        )
    assert len(starts) >= 20
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= run.OPEN_GAP * 0.9, gaps
