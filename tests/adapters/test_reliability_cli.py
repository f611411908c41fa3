"""Issue 10, the layers above the core: ka.live, ka.server, ka.system and the ka command keep the
caller's descriptors unchanged and report every path as documented."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import ka
from ka import cli, live, server, system
from ka._impl import env_flag
from ka.live import pidfd
from reliability_helpers import default_timeout, fd_state, fdinfo_flags, open_fds, run_python

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="ka.live and the ka command are Linux only"
)
pytestmark = linux_only

POLICY = ka.KeepAlive(idle=31, interval=7, count=4)

# A process holding N loopback connections (both ends) and its listener, all blocking.
HOLDER = """
import socket, sys
n = int(sys.argv[1])
listener = socket.create_server(("127.0.0.1", 0))
ends = []
for _ in range(n):
    ends.append(socket.create_connection(listener.getsockname()))
    ends.append(listener.accept()[0])
print(" ".join(str(s.fileno()) for s in [listener, *ends]), flush=True)
sys.stdin.readline()
"""


class Holder:
    def __init__(self, proc: subprocess.Popen[str], fds: list[int]) -> None:
        self.proc = proc
        self.fds = fds

    @property
    def pid(self) -> int:
        return self.proc.pid

    def flags(self) -> dict[int, int]:
        """/proc/PID/fdinfo flags of every socket it holds."""
        return {fd: fdinfo_flags(fd, self.pid) for fd in self.fds}

    def kill(self, reap: bool) -> None:
        """SIGKILL it; reaped (gone from /proc) or left a zombie."""
        self.proc.kill()
        if reap:
            self.proc.wait()
            return
        stat = Path(f"/proc/{self.pid}/stat")
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.01)


@pytest.fixture
def holder(request: pytest.FixtureRequest) -> Iterator[Holder]:
    n = getattr(request, "param", 3)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        fds = [int(x) for x in proc.stdout.readline().split()]
        yield Holder(proc, fds)
    finally:
        with proc:  # closes both pipes
            if proc.poll() is None:
                assert proc.stdin is not None
                proc.stdin.close()
            proc.wait(timeout=10)


def _connected(pid: int) -> list[live.Connection]:
    return live.select(live.connections(pid), states=frozenset({"established"}))


# -- 3. flags unchanged through ka.live (another process's sockets) and ka.server ---------------


@pytest.mark.parametrize("timeout", [None, 5.0], ids=["no-default", "default-5s"])
def test_live_apply_and_read_leave_the_other_process_flags_alone(
    holder: Holder, timeout: float | None
) -> None:
    """Defect 3: the twin under ka.live made another process's blocking sockets non-blocking
    (/proc/PID/fdinfo 02000002 -> 02004002)."""
    before = holder.flags()
    conns = live.connections(holder.pid)
    with default_timeout(timeout):
        report = live.apply(holder.pid, conns, POLICY)
        states = live.read(holder.pid, conns)
    assert report.ok and report.count("applied") == len(conns) == 7
    assert all(s.settings is not None and s.settings.idle == 31 for s in states)
    assert holder.flags() == before


@pytest.mark.parametrize("twin", [False, True], ids=["c", "python"])
def test_ka_apply_and_show_pid_leave_the_other_process_flags_alone(holder: Holder, twin: bool) -> None:
    """Defect 3 through the command, in a process with socket.setdefaulttimeout(5) set."""
    if not twin and env_flag("KA_NO_EXTENSIONS"):
        pytest.skip("KA_NO_EXTENSIONS is set: the compiled core is not under test")
    before = holder.flags()
    code = f"""
        import socket, sys
        from ka.cli import main
        socket.setdefaulttimeout(5)
        codes = [main(["apply", "--pid", "{holder.pid}", "--idle", "31", "--state", "all"]),
                 main(["show", "--pid", "{holder.pid}"])]
        sys.exit(max(codes))
    """
    done = run_python(code, twin=twin)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "7 applied, 0 failed, 0 gone." in done.stdout
    assert holder.flags() == before


@pytest.mark.parametrize("holder", [6], indirect=True)
@pytest.mark.parametrize("at", [1, 3, 13])
def test_ctrl_c_while_duplicating_leaks_no_descriptor(
    monkeypatch: pytest.MonkeyPatch, holder: Holder, at: int
) -> None:
    """Nothing duplicated and leaked: SIGINT right after the at-th pidfd_getfd (the window
    between a dup and its store) leaves this process with the descriptors it had."""
    real = pidfd.pidfd_getfd
    calls = 0

    def getfd_then_sigint(pidfd: int, fd: int) -> int:
        nonlocal calls
        calls += 1
        dup = real(pidfd, fd)
        if calls == at:
            os.kill(os.getpid(), signal.SIGINT)
        return dup

    monkeypatch.setattr("ka.live.pidfd.pidfd_getfd", getfd_then_sigint)
    conns = live.connections(holder.pid)
    before = open_fds()
    with pytest.raises(KeyboardInterrupt):
        live.apply(holder.pid, conns, POLICY)
    assert open_fds() == before
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class OnlyFileno:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()


@pytest.mark.parametrize("timeout", [None, 5.0], ids=["no-default", "default-5s"])
def test_prepare_listener_on_a_bare_fileno_keeps_it_blocking(
    listener: socket.socket, timeout: float | None
) -> None:
    """Defect 3: server._queued borrowed the listener with socket.socket(fileno=...), which
    applies the default timeout (O_NONBLOCK), with the compiled core too."""
    queued = socket.create_connection(listener.getsockname())  # one in the accept queue
    before = fd_state(listener.fileno())
    with default_timeout(timeout):
        plan = server.prepare_listener(OnlyFileno(listener), POLICY, platform=server.Platform.current())
        conn, _ = listener.accept()
        with conn:
            conn_before = fd_state(conn.fileno())
            plan.accepted(conn)
            assert fd_state(conn.fileno()) == conn_before
    queued.close()
    assert fd_state(listener.fileno()) == before
    assert plan.pending == 0 or plan.pending == 1
    assert ka.read(listener).idle == 31


# -- 4. a process that exits part-way, or right after listing ----------------------------------


def _kill_after_first_chunk(monkeypatch: pytest.MonkeyPatch, target: Holder, reap: bool) -> None:
    monkeypatch.setattr("ka.live.pidfd.chunk_size", lambda: 2)
    real = ka.apply_many
    calls = 0

    def apply_then_kill(fds: Any, policy: ka.KeepAlive) -> Any:
        nonlocal calls
        calls += 1
        result = real(fds, policy)
        if calls == 1:
            target.kill(reap)
        return result

    monkeypatch.setattr("ka.live.flows.apply_many", apply_then_kill)


@pytest.mark.parametrize("holder", [6], indirect=True)
@pytest.mark.parametrize("reap", [True, False], ids=["reaped", "zombie"])
def test_apply_on_a_process_that_exits_part_way_reports_the_rest_gone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], holder: Holder, reap: bool
) -> None:
    """Defect 4: connections left when the process exits are `gone` (not `failed` with errno 3),
    and the command exits 0 as for any connection closed since listing."""
    _kill_after_first_chunk(monkeypatch, holder, reap)
    code = cli.main(["apply", "--pid", str(holder.pid), "--idle", "31", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["summary"] == {"applied": 2, "failed": 0, "gone": 10}
    gone = [c for c in data["connections"] if c["status"] == "gone"]
    assert {c["error"] for c in gone} == {f"process {holder.pid} has exited"}
    assert {c["errno"] for c in gone} == {None}
    assert code == data["exit_code"] == cli.EXIT_OK


@pytest.mark.parametrize("reap", [True, False], ids=["reaped", "zombie"])
@pytest.mark.parametrize("command", ["apply", "show"])
def test_a_process_that_exits_right_after_listing_is_no_such_process(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    holder: Holder,
    reap: bool,
    command: str,
) -> None:
    """Defect 4: exit 2 ("no such process", as documented), not 1 or a table of gone entries."""
    real = live.connections

    def list_then_exit(pid: int, tables: Any = None) -> list[live.Connection]:
        found = real(pid, tables)
        holder.kill(reap)
        return found

    monkeypatch.setattr(live, "connections", list_then_exit)
    args = [command, "--pid", str(holder.pid), "--json"] + (["--idle", "31"] if command == "apply" else [])
    code = cli.main(args)
    out = capsys.readouterr()
    assert code == cli.EXIT_USAGE, out
    error = json.loads(out.out)["error"]
    assert error["exit_code"] == cli.EXIT_USAGE
    assert str(holder.pid) in error["message"]
    assert "exited" in error["message"] or "no process" in error["message"]


@pytest.mark.parametrize("holder", [6], indirect=True)
def test_show_on_a_process_that_exits_part_way_names_the_rest(
    monkeypatch: pytest.MonkeyPatch, holder: Holder
) -> None:
    """Defect 4 for ka show: the connections read are kept, the rest say the process exited."""
    monkeypatch.setattr("ka.live.pidfd.chunk_size", lambda: 2)
    real = ka.read_many
    calls = 0

    def read_then_kill(fds: Any) -> Any:
        nonlocal calls
        calls += 1
        result = real(fds)
        if calls == 1:
            holder.kill(True)
        return result

    monkeypatch.setattr("ka.live.flows.read_many", read_then_kill)
    conns = live.connections(holder.pid)
    states = live.read(holder.pid, conns)
    assert len(states) == len(conns) == 13
    assert [s.error for s in states[2:]] == [f"process {holder.pid} has exited"] * 11
    assert all(s.settings is not None for s in states[:2])


# -- 5. ka defaults --set is all or nothing, Ctrl-C included -----------------------------------


@pytest.fixture
def fake_sysctls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, value in (("time", 7200), ("intvl", 75), ("probes", 9)):
        (tmp_path / f"tcp_keepalive_{name}").write_text(f"{value}\n")
    monkeypatch.setattr(system, "PROC_DIR", tmp_path)
    monkeypatch.setattr(system, "system_defaults", lambda: system.SystemDefaults(7200, 75, 9, "test"))
    return tmp_path


def _values(directory: Path) -> list[str]:
    return [(directory / f"tcp_keepalive_{n}").read_text().strip() for n in ("time", "intvl", "probes")]


def _after_first_write(monkeypatch: pytest.MonkeyPatch, directory: Path, action: Callable[[], None]) -> None:
    """Runs ``action`` right after the first sysctl write returns."""
    real = os.write
    ours = {os.stat(directory / f"tcp_keepalive_{n}").st_ino for n in ("time", "intvl", "probes")}
    done = False

    def write(fd: int, data: bytes) -> int:
        nonlocal done
        written = real(fd, data)
        if not done and os.fstat(fd).st_ino in ours:
            done = True
            action()
        return written

    monkeypatch.setattr(os, "write", write)  # the one system.py calls


def test_sigint_during_defaults_set_changes_all_or_nothing(
    monkeypatch: pytest.MonkeyPatch, fake_sysctls: Path
) -> None:
    """Defect 5: SIGINT after the first write left 600 75 9 where 7200 75 9 was. Now the signal
    waits for the writes: all three change, then KeyboardInterrupt."""
    _after_first_write(monkeypatch, fake_sysctls, lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        system.set_system_defaults(idle=600, interval=30, count=4)
    assert _values(fake_sysctls) == ["600", "30", "4"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_keyboard_interrupt_raised_during_defaults_set_restores(
    monkeypatch: pytest.MonkeyPatch, fake_sysctls: Path
) -> None:
    """Defect 5: KeyboardInterrupt that is not a deferrable signal (raised in the writes, as from
    another thread's handler) restores what was written."""

    def interrupt() -> None:
        raise KeyboardInterrupt

    _after_first_write(monkeypatch, fake_sysctls, interrupt)
    with pytest.raises(KeyboardInterrupt):
        system.set_system_defaults(idle=600, interval=30, count=4)
    assert _values(fake_sysctls) == ["7200", "75", "9"]


def test_sigterm_during_defaults_set_is_delivered_after_the_writes(
    monkeypatch: pytest.MonkeyPatch, fake_sysctls: Path
) -> None:
    """Defect 5: SIGTERM (here with a Python handler) is held until the three writes are done."""
    seen: list[list[str]] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(_values(fake_sysctls)))
    try:
        _after_first_write(monkeypatch, fake_sysctls, lambda: os.kill(os.getpid(), signal.SIGTERM))
        system.set_system_defaults(idle=600, interval=30, count=4)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [["600", "30", "4"]]


# -- 7. --json for argparse's own errors -------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["apply", "--pid", "1", "--count", "1e3", "--json"], ["--count", "'1e3'"]),
        (["show", "--pid", "abc", "--json"], ["--pid", "'abc'"]),
        (["show", "--local-port", "x", "--json"], ["--local-port", "'x'"]),
        (["frobnicate", "--json"], ["'frobnicate'"]),
        (["--json", "show", "--pid", "abc"], ["--pid", "'abc'"]),
        (["--json", "defaults"], ["unrecognized arguments: --json"]),
        (["apply", "--json"], ["--pid"]),
    ],
    ids=[
        "count-1e3",
        "pid-abc",
        "local-port-x",
        "unknown-subcommand",
        "json-first",
        "json-misplaced",
        "missing-pid",
    ],
)
def test_json_covers_argument_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], words: list[str]
) -> None:
    """Defect 7: with --json anywhere in argv, one JSON object on stdout, exit 2."""
    code = cli.main(argv)
    out = capsys.readouterr()
    assert code == cli.EXIT_USAGE
    data = json.loads(out.out)
    assert list(data) == ["error"]
    assert data["error"]["exit_code"] == cli.EXIT_USAGE
    for word in words:
        assert word in data["error"]["message"]
    assert "usage: ka" in out.err  # the text stays on stderr


def test_argument_errors_without_json_stay_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["show", "--pid", "abc"]) == cli.EXIT_USAGE
    out = capsys.readouterr()
    assert out.out == ""
    assert "usage: ka show" in out.err and "invalid int value: 'abc'" in out.err


def test_the_installed_command_exits_2_with_json_on_stdout() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ka", "show", "--pid", "abc", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"]["exit_code"] == 2


# -- 8. --pid given a thread id ----------------------------------------------------------------


@pytest.mark.parametrize("command", ["show", "apply"])
def test_pid_of_a_thread_names_its_process(capsys: pytest.CaptureFixture[str], command: str) -> None:
    """Defect 8: not "[Errno 2] No such file or directory" and exit 1, but exit 2 naming the process."""
    started, stop = threading.Event(), threading.Event()
    tid = 0

    def run() -> None:
        nonlocal tid
        tid = threading.get_native_id()
        started.set()
        stop.wait(30)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        started.wait(5)
        assert tid != os.getpid()
        extra = ["--idle", "31"] if command == "apply" else []
        code = cli.main([command, "--pid", str(tid), "--json", *extra])
    finally:
        stop.set()
        thread.join()
    out = capsys.readouterr()
    assert code == cli.EXIT_USAGE, out
    message = json.loads(out.out)["error"]["message"]
    assert (
        message == f"--pid {tid} is a thread of process {os.getpid()}, not a process: use --pid {os.getpid()}"
    )
