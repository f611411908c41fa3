"""apply / read of each core on one socket, against the kernel's own getsockopt, for both implementations."""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
import tempfile
from types import ModuleType

import pytest

import ka
from helpers import POLICY, kernel_values, values_of

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux option numbers")


def test_every_option_is_applied(core: ModuleType, pair: tuple[socket.socket, socket.socket]) -> None:
    client, _ = pair
    core.apply(client, POLICY)
    assert kernel_values(client) == (1, 33, 7, 4, 12345)
    assert core.read(client) == ka.KeepAliveSettings(True, 33, 7, 4, 12.345)


@pytest.mark.parametrize("as_target", ["socket", "fd", "fileno_object", "transport_socket"])
def test_targets(core: ModuleType, pair: tuple[socket.socket, socket.socket], as_target: str) -> None:
    _, accepted = pair

    class HasFileno:
        def fileno(self) -> int:
            return accepted.fileno()

    target: object
    if as_target == "socket":
        target = accepted
    elif as_target == "fd":
        target = accepted.fileno()
    elif as_target == "fileno_object":
        target = HasFileno()
    else:
        from asyncio.trsock import TransportSocket

        target = TransportSocket(accepted)
    core.apply(target, POLICY)
    assert kernel_values(accepted) == (1, 33, 7, 4, 12345)
    assert core.read(target).idle == 33


def test_leaves_unset_fields_alone(core: ModuleType, pair: tuple[socket.socket, socket.socket]) -> None:
    client, _ = pair
    core.apply(client, POLICY)
    core.apply(client, ka.KeepAlive(count=9))
    assert kernel_values(client) == (1, 33, 7, 9, 12345)


def test_disable(core: ModuleType, pair: tuple[socket.socket, socket.socket]) -> None:
    client, _ = pair
    core.apply(client, POLICY)
    core.apply(client, ka.KeepAlive.disabled())
    assert kernel_values(client)[0] == 0
    assert core.read(client).enabled is False
    core.apply(client, ka.KeepAlive(enabled=False, user_timeout=0))
    assert kernel_values(client)[4] == 0


def test_read_untouched_socket_gives_system_defaults(
    core: ModuleType, pair: tuple[socket.socket, socket.socket]
) -> None:
    client, _ = pair
    d = ka.system_defaults()
    assert core.read(client) == ka.KeepAliveSettings(False, d.idle, d.interval, d.count, 0.0)


def test_listening_socket_works(core: ModuleType, listener: socket.socket) -> None:
    core.apply(listener, POLICY)
    assert kernel_values(listener) == (1, 33, 7, 4, 12345)


def test_ipv6(core: ModuleType) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with listener, socket.create_connection(listener.getsockname()[:2]) as client:
        core.apply(client, POLICY)
        assert kernel_values(client) == (1, 33, 7, 4, 12345)


def _check_error(exc: OSError, err: int, fd: int, option: ka.Option) -> None:
    assert exc.errno == err
    assert exc.fd == fd  # type: ignore[attr-defined]
    assert exc.option is option  # type: ignore[attr-defined]
    assert str(fd) in str(exc) and option.system_name in str(exc)


def test_closed_fd(core: ModuleType) -> None:
    s = socket.socket()
    fd = s.fileno()
    s.close()
    with pytest.raises(OSError) as info:
        core.apply(fd, POLICY)
    _check_error(info.value, errno.EBADF, fd, ka.Option.KEEPALIVE)
    with pytest.raises(OSError) as info:
        core.read(fd)
    _check_error(info.value, errno.EBADF, fd, ka.Option.KEEPALIVE)


def test_closed_socket_object(core: ModuleType) -> None:
    s = socket.socket()
    s.close()
    with pytest.raises(OSError) as info:
        core.apply(s, POLICY)
    _check_error(info.value, errno.EBADF, -1, ka.Option.KEEPALIVE)


def test_regular_file(core: ModuleType) -> None:
    with tempfile.TemporaryFile() as f:
        with pytest.raises(OSError) as info:
            core.apply(f, POLICY)
        _check_error(info.value, errno.ENOTSOCK, f.fileno(), ka.Option.KEEPALIVE)


def test_udp_socket(core: ModuleType) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        with pytest.raises(OSError) as info:
            core.apply(u, POLICY)
        _check_error(info.value, errno.ENOPROTOOPT, u.fileno(), ka.Option.IDLE)
        # SO_KEEPALIVE alone is accepted on UDP (it means nothing there)
        core.apply(u, ka.KeepAlive())
        assert u.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1


def test_unix_socket(core: ModuleType) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        with pytest.raises(OSError) as info:
            core.apply(a, POLICY)
        assert info.value.errno in (errno.EOPNOTSUPP, errno.ENOPROTOOPT)
        assert info.value.option is ka.Option.IDLE  # type: ignore[attr-defined]


def test_bad_targets_raise_before_any_call(core: ModuleType) -> None:
    with pytest.raises(TypeError, match="target is str 'x': expected a socket"):
        core.apply("x", POLICY)
    with pytest.raises(TypeError, match="target is a bool"):
        core.apply(True, POLICY)
    with pytest.raises(ValueError, match="not a descriptor number"):
        core.apply(2**40, POLICY)
    with pytest.raises(ValueError, match="not a descriptor number"):
        core.apply(2**70, POLICY)
    with pytest.raises(TypeError, match=r"policy must be a ka\.KeepAlive"):
        core.apply(0, {"idle": 5})

    class BadFileno:
        def fileno(self) -> str:
            return "3"

    with pytest.raises(TypeError, match=r"fileno\(\) returned str"):
        core.apply(BadFileno(), POLICY)


def test_asyncio_transport_socket(core: ModuleType) -> None:
    async def main() -> tuple[int, ...]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()[:2]
        _, writer = await asyncio.open_connection(host, port)
        sock = writer.get_extra_info("socket")
        core.apply(sock, POLICY)
        values = values_of(sock)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return values

    assert asyncio.run(main()) == (1, 33, 7, 4, 12345)


def test_core_limits_match_python_mirror(core: ModuleType) -> None:
    from ka import _options

    assert tuple(core.LIMITS) == tuple(_options.LIMITS)
    assert _options.PLATFORM_CODES[_options.PLATFORM] == core.PLATFORM_CODE
    assert tuple(core.HAVE) == (True, True, True, True)
