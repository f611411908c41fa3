"""The ka command's shape: --version, bare ka, the examples in --help, colour, the sums beyond a
screenful (on a real terminal), and the completion scripts run by the shells themselves."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import ka
from ka.cli import EXIT_OK, EXIT_USAGE, build_parser
from ka.cli.checks import EXIT_PERMISSION, EXIT_REFUSED, EXIT_UNREADABLE, EXIT_UNSUPPORTED
from ka.cli.completion import commands, script
from ka.cli.parser import COMMANDS, examples_text
from live_helpers import EchoServer, echo_server, ka_command, linux_only

ANSI = "\x1b["


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "LINES", "COLUMNS")}
    env.update(extra)
    return env


def on_terminal(*args: str, rows: int = 24, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``python -m ka ARGS`` with its stdout on a pseudo-terminal of ``rows`` lines: (exit code, text)."""
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", rows, 200, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ka", *args],
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=subprocess.PIPE,
        env={**clean_env(TERM="xterm"), **(env or {})},
    )
    os.close(child)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([parent], [], [], 0.5)
            if ready:
                try:
                    data = os.read(parent, 65536)
                except OSError:  # EIO: the child closed its side
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        os.close(parent)
        assert proc.stderr is not None
        proc.stderr.close()
    return code, b"".join(chunks).decode().replace("\r\n", "\n")


# -- --version, bare ka, --help ---------------------------------------------------------------


def test_version() -> None:
    out = ka_command("--version")
    assert out.returncode == EXIT_OK and out.stdout.startswith(f"ka {ka.__version__} (")
    assert f"Python {sys.version.split()[0]}" in out.stdout


def test_bare_ka_prints_the_help_and_exits_0() -> None:
    out = ka_command()
    assert out.returncode == EXIT_OK, out.stderr
    assert out.stdout == ka_command("--help").stdout and "examples:" in out.stdout and not out.stderr


def test_help_shows_an_example_of_every_command() -> None:
    text = ka_command("--help").stdout
    names = [c.name for c in commands(build_parser())]
    assert names == [
        "defaults",
        "show",
        "apply",
        "listen",
        "probe",
        "audit",
        "exporter",
        "guard",
        "bench",
        "completion",
    ]
    examples = text[text.index("examples:") :]
    for name in names:
        assert f"ka {name} " in examples or f"ka {name}\n" in examples, name
    # Built from the modules' EXAMPLES, in order, each once.
    for command in COMMANDS:
        for line in command.EXAMPLES:
            assert line.partition("  # ")[0] in examples
    assert "exit codes: 0 ok" in text and "5 the sysctls are read-only here" in text


def test_commands_help_gives_the_exit_codes_checks_defines() -> None:
    # Each command's own list of codes, as `ka audit --help` and `ka guard --help` print it.
    audit_help = " ".join(ka_command("audit", "--help").stdout.split())
    assert f"{EXIT_UNREADABLE}: one could not be read for another reason" in audit_help
    assert f"{EXIT_PERMISSION}: a picked process could not be read for lack of ptrace" in audit_help
    guard_help = " ".join(ka_command("guard", "--help").stdout.split())
    assert f"{EXIT_REFUSED} the kernel refused the program or the attachment" in guard_help
    assert f"{EXIT_UNSUPPORTED} the kernel or system lacks a piece" in guard_help


def test_examples_line_up_their_comments() -> None:
    text = examples_text(["ka a  # one", "ka bbb --x  # two", "ka " + "c" * 60 + "  # three"])
    lines = text.splitlines()
    assert lines[1].index("#") == lines[2].index("#") == lines[4].index("#")
    assert lines[3] == "  ka " + "c" * 60 and lines[4].strip() == "# three"


def test_unknown_command_is_still_a_usage_error() -> None:
    assert ka_command("frobnicate").returncode == EXIT_USAGE


# -- colour and sums on a terminal -------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[EchoServer]:
    with echo_server(24, 0) as srv:
        yield srv


@linux_only
def test_colour_on_a_terminal_only(server: EchoServer) -> None:
    args = ("show", "--pid", str(server.pid), "--full")
    code, text = on_terminal(*args, rows=200)
    assert code == EXIT_OK and f"{ANSI}1mFD" in text and f"{ANSI}33moff" in text
    assert ANSI not in ka_command(*args, env=clean_env()).stdout  # a pipe: none
    assert ANSI not in on_terminal(*args, rows=200, env={"NO_COLOR": "1"})[1]
    assert ANSI not in on_terminal("--color", "never", *args, rows=200)[1]
    assert ANSI not in on_terminal(*args, rows=200, env={"TERM": "dumb"})[1]
    assert f"{ANSI}33moff" in ka_command(*args, env=clean_env(FORCE_COLOR="1")).stdout
    assert f"{ANSI}33moff" in ka_command("--color", "always", *args, env=clean_env()).stdout
    # Coloured or not, the columns line up the same.
    plain = ka_command(*args, env=clean_env()).stdout.splitlines()
    painted = [strip_ansi(line) for line in on_terminal(*args, rows=200)[1].splitlines()]
    assert painted == plain


def strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@linux_only
def test_show_sums_up_beyond_a_screenful(server: EchoServer) -> None:
    rows = len(server.clients) + len(server.ports)
    code, text = on_terminal("show", "--pid", str(server.pid), rows=20, env={"NO_COLOR": "1"})
    assert code == EXIT_OK
    lines = text.splitlines()
    assert lines[0].startswith(f"process {server.pid} (") and "FD" not in text
    assert lines[1] == f"{rows} TCP connections of process {server.pid}:"
    assert lines[2] == f"  {rows}  off 7200/75/9  keepalive off: a silent dead peer is never found"
    assert lines[3] == f"({rows} rows do not fit the terminal: --full prints every one)"
    # A tall terminal, --full, or a pipe: every row.
    for out in (
        on_terminal("show", "--pid", str(server.pid), rows=200, env={"NO_COLOR": "1"})[1],
        on_terminal("show", "--pid", str(server.pid), "--full", rows=20, env={"NO_COLOR": "1"})[1],
        ka_command("show", "--pid", str(server.pid)).stdout,
    ):
        assert sum(line.lstrip().split(" ")[0].isdigit() for line in out.splitlines()[2:]) >= rows
    summary = ka_command("show", "--pid", str(server.pid), "--summary").stdout.splitlines()
    assert summary[1:] == lines[1:3]


@linux_only
def test_apply_sums_up_beyond_a_screenful_and_lists_failures(server: EchoServer) -> None:
    n = len(server.clients)
    policy = ("--idle", "50", "--interval", "5", "--count", "3")
    code, text = on_terminal("apply", "--pid", str(server.pid), *policy, rows=20, env={"NO_COLOR": "1"})
    assert code == EXIT_OK
    lines = text.splitlines()
    assert lines[1] == f"  {n}  applied  off 7200/75/9 -> on 50/5/3"
    assert lines[2] == f"{n} applied, 0 failed, 0 gone. (--full prints every connection)"
    assert "FD" not in text
    out = ka_command("apply", "--pid", str(server.pid), "--idle", "60", "--dry-run", "--summary")
    assert out.returncode == EXIT_OK
    assert f"  {n}  would change  on 50/5/3 -> on 60/5/3" in out.stdout.splitlines()
    full = ka_command("apply", "--pid", str(server.pid), *policy, "--full").stdout.splitlines()
    assert full[1].split()[:3] == ["FD", "LOCAL", "REMOTE"] and len(full) == n + 4


# -- completion --------------------------------------------------------------------------------


def every_option(name: str) -> list[str]:
    parser = build_parser()
    (cmd,) = [c for c in commands(parser) if c.name == name]
    return [flag for option in cmd.options for flag in option.flags]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_names_every_command_and_option(shell: str) -> None:
    out = ka_command("completion", shell)
    assert out.returncode == EXIT_OK, out.stderr
    parser = build_parser()
    for cmd in commands(parser):
        assert cmd.name in out.stdout
        for option in cmd.options:
            for flag in option.flags:
                word = (
                    flag
                    if shell != "fish"
                    else (f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}")
                )
                assert word in out.stdout, (cmd.name, flag)
    assert out.stdout == script(shell, parser)


def test_completion_refuses_other_shells() -> None:
    out = ka_command("completion", "tcsh")
    assert out.returncode == EXIT_USAGE and "invalid choice: 'tcsh'" in out.stderr


def bash_complete(line: str, tmp_path: Path) -> list[str]:
    """What the bash script offers for the command line ``line`` (the cursor at its end)."""
    (tmp_path / "ka.bash").write_text(script("bash", build_parser()))
    words = line.split(" ")
    quoted = " ".join(shlex.quote(w) for w in words)
    program = (
        f"source {tmp_path / 'ka.bash'}\n"
        f"COMP_WORDS=({quoted})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_ka\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    out = subprocess.run(
        ["bash", "--norc", "-c", program], capture_output=True, text=True, timeout=30, check=True
    )
    return out.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_commands_options_and_values(tmp_path: Path) -> None:
    out = subprocess.run(["bash", "-n"], input=script("bash", build_parser()), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert bash_complete("ka sh", tmp_path) == ["show"]
    assert bash_complete("ka --color never ap", tmp_path) == ["apply"]
    assert bash_complete("ka --color n", tmp_path) == ["never"]
    assert set(bash_complete("ka show --", tmp_path)) == {
        f for f in every_option("show") if f.startswith("--")
    }
    assert bash_complete("ka show --state list", tmp_path) == ["listen"]
    assert str(os.getpid()) in bash_complete("ka apply --pid ", tmp_path)
    assert bash_complete("ka completion z", tmp_path) == ["zsh"]
    assert "--persist" in bash_complete("ka defaults --pe", tmp_path)
    assert "bash" in bash_complete("ka listen 127.0.0.1:0 --idle 5 -- bas", tmp_path)  # commands on PATH


@pytest.mark.skipif(shutil.which("zsh") is None, reason="needs zsh (Debian package zsh)")
def test_zsh_script_parses_and_registers(tmp_path: Path) -> None:
    path = tmp_path / "_ka"
    path.write_text(script("zsh", build_parser()))
    assert subprocess.run(["zsh", "-n", str(path)], capture_output=True, text=True).returncode == 0
    program = (
        f"autoload -U compinit && compinit -u -d {tmp_path}/dump; source {path}; print -r -- $_comps[ka]"
    )
    out = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "_ka", out.stderr


@pytest.mark.skipif(shutil.which("fish") is None, reason="needs fish (Debian package fish)")
def test_fish_completes_commands_and_options(tmp_path: Path) -> None:
    path = tmp_path / "ka.fish"
    path.write_text(script("fish", build_parser()))
    assert subprocess.run(["fish", "--no-execute", str(path)], capture_output=True, text=True).returncode == 0

    def complete(line: str) -> list[str]:
        program = f"source {path}; complete -C {json.dumps(line)}"
        out = subprocess.run(
            ["fish", "--no-config", "-c", program],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            env={**os.environ, "HOME": str(tmp_path)},
        )
        return [row.split("\t")[0] for row in out.stdout.splitlines()]

    assert complete("ka sh") == ["show"]
    assert {"--pid", "--summary", "--full", "--json"} <= set(complete("ka show --"))
    assert complete("ka --color n") == ["never"]
    assert complete("ka completion f") == ["fish"]
    assert "listen" in complete("ka show --state lis")


def test_every_command_module_follows_the_convention() -> None:
    for command in COMMANDS:
        assert callable(command.register) and command.EXAMPLES
        assert all(
            line.startswith(("ka ", "sudo ka ", "systemd-socket-activate")) for line in command.EXAMPLES
        )
        assert all("  # " in line for line in command.EXAMPLES)
