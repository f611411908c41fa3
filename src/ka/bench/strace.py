"""System calls per accepted connection on the server path, counted by ``strace -c -f``.

Each way of giving the policy runs under strace in its own child process
(``python -m ka.bench.harness --server-path-child MODE N``), so its calls are counted apart.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile

from .server_path import SERVER_MODES


def server_syscalls(n: int) -> dict[str, dict[str, float]] | str:
    """setsockopt and accept calls per accepted connection, counted by ``strace -c -f``."""
    strace = shutil.which("strace")
    if strace is None:
        return "strace is not installed: system calls not counted"
    counts: dict[str, dict[str, float]] = {}
    for label, mode in SERVER_MODES.items():
        with tempfile.NamedTemporaryFile("r", suffix=".strace") as report:
            cmd = [
                strace,
                "-f",
                "-c",
                "-o",
                report.name,
                "-e",
                "trace=setsockopt,accept,accept4",
                sys.executable,
                "-m",
                "ka.bench.harness",
                "--server-path-child",
                mode,
                str(n),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                return f"strace failed ({proc.stderr.strip()[:200]})"
            calls = parse_strace_summary(report.read())
        counts[label] = {name: calls.get(name, 0) / n for name in ("setsockopt", "accept4")}
        counts[label]["accept4"] += calls.get("accept", 0) / n
    return counts


def parse_strace_summary(text: str) -> dict[str, int]:
    calls: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[-1].isidentifier() and fields[3].isdigit():
            calls[fields[-1]] = int(fields[3])
    return calls
