"""Platform facts checked without the recording stand-in: capabilities, limits, names."""

from __future__ import annotations

import errno
import importlib
from types import SimpleNamespace

import pytest

import ka
from ka import _options, facts
from ka._options import OS_CALLS, WSAEINVAL, WSAENOPROTOOPT, Option
from ka.errors import option_error
from ka.protocol import Spec
from ka.results import settings_of


def test_read_never_presents_defaults() -> None:
    """Defect 3: ka.read used to fill unreadable values with the registry defaults (7200/1)."""
    settings = settings_of(Spec(1, -1, -1, -1, -1))  # what both cores build from an old-Windows read
    assert settings.enabled is True
    assert (settings.idle, settings.interval, settings.count) == (None, None, None)


class ProbeSocket:
    """A fresh Windows socket: setsockopt answers the Winsock code in ``missing`` for an option,
    raised as CPython raises it (errno mapped, the code in winerror)."""

    def __init__(self, missing: dict[int, int]) -> None:
        self.missing = missing
        self.calls: list[tuple[int, int, int]] = []

    def setsockopt(self, level: int, name: int, value: int) -> None:
        self.calls.append((level, name, value))
        if name in self.missing:
            exc = OSError(errno.ENOPROTOOPT, "stand-in")
            exc.winerror = self.missing[name]  # type: ignore[attr-defined]
            raise exc

    def __enter__(self) -> ProbeSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _windows_capabilities(monkeypatch: pytest.MonkeyPatch, probe: ProbeSocket, read: Spec) -> ka.Capabilities:
    fake = SimpleNamespace(
        HAVE=(True, True, True, True),
        read=lambda target: settings_of(read),
        uring_status=lambda: (38, "Linux-only"),
    )
    monkeypatch.setattr(facts, "core", fake)
    monkeypatch.setattr(facts, "PLATFORM", "windows")
    monkeypatch.setattr(facts, "LIMITS", _options.LIMITS_BY_PLATFORM["windows"])
    monkeypatch.setattr(facts, "_fresh_socket", lambda: probe, raising=False)
    facts._windows_knobs.cache_clear()
    try:
        return ka.capabilities()
    finally:
        facts._windows_knobs.cache_clear()


def test_windows_capabilities_detected_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 4: count was True from a compile-time flag; it is what this machine answers."""
    probe = ProbeSocket({16: WSAENOPROTOOPT})  # a build with TCP_KEEPIDLE but no TCP_KEEPCNT
    caps = _windows_capabilities(monkeypatch, probe, Spec(0, 7200, 1, -1, 120000))
    assert caps.count is False and caps.idle is True and caps.interval is True
    assert caps.user_timeout is True and "TCP_MAXRTMS" in caps.user_timeout_semantics
    assert probe.calls == [(6, 3, 1), (6, 17, 1), (6, 16, 1), (6, 14, 1)]


def test_windows_capabilities_are_asked_as_go_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19 item 8: reading a fresh socket took TCP_MAXRT's -1 ("retransmit forever") for a
    missing option; ka now sets 1 on a fresh socket and counts only WSAENOPROTOOPT/WSAEINVAL as
    missing, as Go does (internal/syscall/windows version_windows.go initTCPKeepAlive)."""
    # TCP_MAXRTMS missing, TCP_MAXRT present and reading -1 on a fresh socket: a user timeout works
    probe = ProbeSocket({14: WSAENOPROTOOPT})
    caps = _windows_capabilities(monkeypatch, probe, Spec(0, 7200, 1, 10, -1))
    assert caps.user_timeout is True and caps.count is True
    assert probe.calls[-2:] == [(6, 14, 1), (6, 5, 1)]
    # Wine: every one of them answers WSAENOPROTOOPT (tools/wine_check.c shows it for real)
    wine = ProbeSocket(dict.fromkeys((3, 17, 16, 14, 5), WSAENOPROTOOPT))
    assert facts.windows_knobs(wine) == (False, False, False, False)
    assert facts.windows_knobs(ProbeSocket({16: WSAEINVAL})) == (True, True, False, True)
    # Any other refusal means the option exists (Go's rule): it is there, just not for this value
    assert facts.windows_knobs(ProbeSocket({16: 10013})) == (True, True, True, True)


def test_cygwin_is_posix() -> None:
    """Defect 7: Cygwin takes the header's POSIX "other" branch (int fds); _options agrees."""
    assert _options._platform_key("cygwin") == "other"
    assert _options._platform_key("win32") == "windows"


def test_bench_uses_this_os_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 9: bench/harness.py read getsockopt(IPPROTO_TCP, 18), Linux's TCP_USER_TIMEOUT."""
    import ka.bench.methods as methods

    monkeypatch.setattr(_options, "HERE", OS_CALLS["darwin"])
    try:
        reloaded = importlib.reload(methods)
        assert reloaded.READ_NUMBERS == [0x10, 0x101, 0x102, 0x80]
        monkeypatch.setattr(_options, "HERE", OS_CALLS["freebsd"])
        assert importlib.reload(methods).READ_NUMBERS == [256, 512, 1024]
    finally:
        monkeypatch.undo()
        importlib.reload(methods)


def test_winsock_errors_are_named() -> None:
    """Defect 11: os.strerror(10042) is "Unknown error" on Windows; ka names the WSA error."""
    exc = option_error(WSAENOPROTOOPT, 5, Option.COUNT)
    assert "WSAENOPROTOOPT" in str(exc) and exc.errno == WSAENOPROTOOPT


def test_windows_refuses_a_zero_user_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """TCP_MAXRT takes 0 as a zero-second timeout (Microsoft's option table): on Windows 0 cannot
    mean "the system's behaviour" as it does on Linux and macOS."""
    import ka.policy
    import ka.units

    monkeypatch.setattr(ka.units, "PLATFORM", "windows")
    monkeypatch.setattr(ka.policy, "LIMITS", _options.LIMITS_BY_PLATFORM["windows"])
    with pytest.raises(ValueError, match="user_timeout=0 cannot restore"):
        ka.KeepAlive(idle=60, user_timeout=0)
    assert ka.KeepAlive(idle=60, user_timeout=1.5).user_timeout_ms == 1500
    monkeypatch.setattr(ka.units, "PLATFORM", "darwin")
    monkeypatch.setattr(ka.policy, "LIMITS", _options.LIMITS_BY_PLATFORM["darwin"])
    assert ka.KeepAlive(idle=60, user_timeout=1.5).user_timeout_ms == 2000  # whole seconds
    assert ka.KeepAlive(idle=60, user_timeout=0).user_timeout_ms == 0
