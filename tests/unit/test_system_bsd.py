"""system_defaults() on macOS and the BSDs, with the sysctl reads replaced by what each kernel
answers: milliseconds on macOS and FreeBSD, slow-timer ticks on NetBSD, seconds by MIB on OpenBSD
(which has no sysctlbyname). tools/sysctl_constants.c checks the numbers and units against the
NetBSD and OpenBSD headers (nox -s platforms)."""

from __future__ import annotations

import pytest

import ka
from ka import system
from ka._options import HERE


def _as(
    monkeypatch: pytest.MonkeyPatch, name: str, by_name: dict[str, int], by_mib: dict[tuple[int, ...], int]
) -> None:
    monkeypatch.setattr(system, "PLATFORM", "darwin" if name == "darwin" else "freebsd")
    monkeypatch.setattr(system, "HERE", HERE._replace(name=name), raising=False)

    def sysctlbyname(key: str) -> int | None:
        if name == "openbsd":  # ctypes: the libc has no such function
            raise AttributeError("function 'sysctlbyname' not found")
        return by_name.get(key)

    monkeypatch.setattr(system, "_sysctl_int", sysctlbyname)
    monkeypatch.setattr(system, "_sysctl_mib", by_mib.get, raising=False)


@pytest.mark.parametrize("name", ["darwin", "freebsd"])
def test_macos_and_freebsd_give_milliseconds(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    ms = {"net.inet.tcp.keepidle": 7_200_000, "net.inet.tcp.keepintvl": 75_000, "net.inet.tcp.keepcnt": 8}
    _as(monkeypatch, name, ms, {})
    assert ka.system_defaults()[:3] == (7200, 75, 8)


def test_netbsd_gives_slow_timer_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19 item 7: NetBSD's keepidle of 14400 (2 h in PR_SLOWHZ ticks) read as milliseconds
    gave 14 s. tcp_timer.h counts these timers PR_SLOWHZ times a second; tcp_var.h exports the
    rate as net.inet.tcp.slowhz."""
    ticks = {
        "net.inet.tcp.keepidle": 14_400,
        "net.inet.tcp.keepintvl": 150,
        "net.inet.tcp.keepcnt": 8,
        "net.inet.tcp.slowhz": 2,
    }
    _as(monkeypatch, "netbsd", ticks, {})
    defaults = ka.system_defaults()
    assert defaults[:3] == (7200, 75, 8) and "2 ticks a second" in defaults.source
    del ticks["net.inet.tcp.slowhz"]  # unreadable: PR_SLOWHZ, 2
    assert ka.system_defaults()[:3] == (7200, 75, 8)


def test_openbsd_reads_seconds_by_mib(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19 item 7: OpenBSD has no sysctlbyname (the call raised AttributeError); its
    net.inet.tcp.keepidle/keepintvl are seconds (tcp_usrreq.c tcpctl_vars: tcp_keepidle_sec),
    read by MIB {CTL_NET, PF_INET, IPPROTO_TCP, TCPCTL_KEEPIDLE}; the count is fixed at 8."""
    _as(monkeypatch, "openbsd", {}, {(4, 2, 6, 3): 3600, (4, 2, 6, 4): 30})
    defaults = ka.system_defaults()
    assert defaults[:3] == (3600, 30, 8) and "count fixed at 8" in defaults.source
    _as(monkeypatch, "openbsd", {}, {})  # nothing readable: the kernel's defaults
    assert ka.system_defaults()[:3] == (7200, 75, 8)
