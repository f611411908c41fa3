"""Platform facts checked without the recording stand-in: capabilities, limits, names."""

from __future__ import annotations

import importlib
import socket
from types import SimpleNamespace

import pytest

import ka
from ka import _options, facts
from ka._options import OS_CALLS, WSAENOPROTOOPT, Option
from ka.errors import option_error
from ka.protocol import Spec
from ka.results import settings_of


def test_read_never_presents_defaults() -> None:
    """Defect 3: ka.read used to fill unreadable values with the registry defaults (7200/1)."""
    settings = settings_of(Spec(1, -1, -1, -1, -1))  # what both cores build from an old-Windows read
    assert settings.enabled is True
    assert (settings.idle, settings.interval, settings.count) == (None, None, None)


def test_windows_capabilities_detected_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 4: count was True from a compile-time flag; it is what this machine answers."""
    reads: list[object] = []

    def read(target: object) -> ka.KeepAliveSettings:
        reads.append(target)
        return settings_of(Spec(0, 7200, 1, -1, 120000))  # a build with TCP_KEEPIDLE but no TCP_KEEPCNT

    fake = SimpleNamespace(HAVE=(True, True, True, True), read=read, uring_status=lambda: (38, "Linux-only"))
    monkeypatch.setattr(facts, "core", fake)
    monkeypatch.setattr(facts, "PLATFORM", "windows")
    monkeypatch.setattr(facts, "LIMITS", _options.LIMITS_BY_PLATFORM["windows"])
    facts._windows_knobs.cache_clear()
    try:
        caps = ka.capabilities()
    finally:
        facts._windows_knobs.cache_clear()
    assert caps.count is False and caps.idle is True and caps.interval is True
    assert caps.user_timeout is True and "TCP_MAXRTMS" in caps.user_timeout_semantics
    assert len(reads) == 1 and isinstance(reads[0], socket.socket)


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
