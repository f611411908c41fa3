"""ka exporter scraped by a real Prometheus server (Debian's ``prometheus``): the numbers in its
query API equal what ``ka show --json`` says for the same process, before and after ``ka apply
--pid`` changes them. Prometheus runs on a free loopback port with a temporary config and
storage, scraping every second, and is always stopped by pid."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import terminate
from live_helpers import apply_to_remote, echo_server, linux_only, run_json

pytest.importorskip(
    "prometheus_client", reason="ka exporter needs prometheus-client (the integrations extra)"
)
PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    linux_only,
    pytest.mark.slow,
    pytest.mark.skipif(PROMETHEUS is None, reason="needs prometheus (Debian package prometheus)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def prometheus_for() -> Iterator[Any]:
    """Starts Prometheus scraping a target every second; yields a query function."""
    started: list[subprocess.Popen[Any]] = []
    work = tempfile.TemporaryDirectory()

    def start(target: str) -> Any:
        port = free_port()
        config = Path(work.name) / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: ka\n    static_configs:\n      - targets: ['{target}']\n"
        )
        assert PROMETHEUS is not None
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={work.name}/data",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(proc)
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/-/ready", proc)

        def query(expression: str) -> dict[str, float]:
            url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
            with urllib.request.urlopen(url, timeout=5) as answer:
                data = json.load(answer)
            assert data["status"] == "success", data
            return {
                ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items())): float(r["value"][1])
                for r in data["data"]["result"]
            }

        query.base = base  # type: ignore[attr-defined]  # for the plot's range queries
        return query

    try:
        yield start
    finally:
        for proc in started:
            terminate(proc)
        work.cleanup()


def expected(pid: int) -> dict[str, float]:
    """From ``ka show --json``: connections by keepalive state, and those found within 60 s."""
    (shown,) = run_json("show", "--pid", str(pid), "--state", "connected")["processes"]
    counts = {"off": 0.0, "own": 0.0, "le60": 0.0, "violations": 0.0}
    for conn in shown["connections"]:
        values = conn["keepalive"]
        counts["off" if not values["enabled"] else "own"] += 1  # no connection here has the defaults
        within = values["dead_peer_after"] is not None and values["dead_peer_after"] <= 60
        counts["le60"] += within
        counts["violations"] += not within
    return counts


def scraped(query: Any, pid: int) -> dict[str, float]:
    selector = f'pid="{pid}"'
    by_state = query(f"sum by (keepalive) (ka_connections{{{selector}}})")
    return {
        "off": by_state.get("keepalive=off", -1.0),
        "own": by_state.get("keepalive=own", -1.0),
        "le60": sum(query(f'ka_detection_seconds_bucket{{{selector},le="60"}}').values()),
        "violations": sum(query(f'ka_audit_violations{{{selector},rule="max-detection"}}').values()),
    }


def wait_for(query: Any, pid: int, want: dict[str, float], timeout: float = 15) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        got = scraped(query, pid)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def test_prometheus_sees_what_ka_show_sees(prometheus_for: Any) -> None:
    with echo_server(6, 2) as srv:
        port = free_port()
        command = [sys.executable, "-m", "ka", "exporter", "--listen", f"127.0.0.1:{port}"]
        exporter = subprocess.Popen(
            [*command, "--pid", str(srv.pid), "--max-detection", "60"],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/metrics", exporter)
            query = prometheus_for(f"127.0.0.1:{port}")
            before = expected(srv.pid)
            assert before == {"off": 8.0, "own": 0.0, "le60": 0.0, "violations": 8.0}
            assert wait_for(query, srv.pid, before) == before
            # Three connections get a policy that finds a dead peer in 45 s, one in 90 s.
            for client in srv.clients[:3]:
                apply_to_remote(srv.pid, "idle=30 interval=5 count=3", client.getsockname()[1])
            apply_to_remote(srv.pid, "idle=60 interval=10 count=3", srv.clients[3].getsockname()[1])
            after = expected(srv.pid)
            assert after == {"off": 4.0, "own": 4.0, "le60": 3.0, "violations": 5.0}
            assert wait_for(query, srv.pid, after) == after
            # Labels: the service port the process listens on, inbound; no per-connection label.
            series = query(f'ka_connections{{pid="{srv.pid}",keepalive="own"}}')
            assert {dict(p.split("=") for p in key.split(","))["port"] for key in series} <= {
                str(p) for p in srv.ports
            }
            assert all("direction=in" in key for key in series)
            idle = float(Path("/proc/sys/net/ipv4/tcp_keepalive_time").read_text())
            assert query("sum(ka_system_keepalive_idle_seconds)") == {"": idle}
            assert query("sum(ka_scrape_errors_total)") == {"": 0.0}
            if os.environ.get("KA_EXPORTER_PLOT"):  # the docs' plot (a file name), drawn from this run
                _plot(query, srv.pid, os.environ["KA_EXPORTER_PLOT"])
        finally:
            terminate(exporter)
            assert exporter.stderr is not None
            exporter.stderr.close()


def _plot(query: Any, pid: int, path: str) -> None:  # pragma: no cover - run by hand for docs/
    """docs/audit_metrics.png: the run's series as Prometheus stored them (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = time.time()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    panels = (
        (top, f'sum by (keepalive) (ka_connections{{pid="{pid}"}})', "keepalive", "connections"),
        (
            bottom,
            f'sum by (le) (ka_detection_seconds_bucket{{pid="{pid}",le=~"30|60|120|7875"}})',
            "le",
            "found within (cumulative)",
        ),
    )
    for axis, expression, label, title in panels:
        url = f"{query.base}/api/v1/query_range?" + urllib.parse.urlencode(
            {"query": expression, "start": end - 60, "end": end, "step": "1"}
        )
        with urllib.request.urlopen(url, timeout=5) as answer:
            results = json.load(answer)["data"]["result"]
        for series in results:
            times = [float(t) - end for t, _ in series["values"]]
            axis.step(
                times,
                [float(v) for _, v in series["values"]],
                where="post",
                label=f"{label}={series['metric'][label]}",
            )
        axis.set_ylabel(title)
        axis.legend(loc="upper left", fontsize="small")
        axis.grid(alpha=0.3)
    bottom.set_xlabel("seconds before the end of the run (ka apply --pid at the step)")
    top.set_title(f"ka exporter scraped by Prometheus every second: process {pid}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
