"""SSH clients against a real OpenSSH sshd on loopback: paramiko and asyncssh over a socket that
carries the policy, and asyncssh's tcp_keepalive switching SO_KEEPALIVE itself."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Iterator
from pathlib import Path

import pytest

from client_peers import EXAMPLE_VALUES, client_values, linux_only, own_sockets, run_example, sshd_server
from helpers import EXPECTED, POLICY

pytestmark = linux_only


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    with sshd_server(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def test_paramiko(sshd: tuple[int, Path]) -> None:
    paramiko = pytest.importorskip("paramiko", reason="paramiko is not installed")
    import ka.integrations.paramiko

    port, key = sshd
    with paramiko.SSHClient() as client:
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        ka.integrations.paramiko.connect(
            client,
            "127.0.0.1",
            POLICY,
            port,
            username=getpass.getuser(),
            key_filename=str(key),
            timeout=10,
            allow_agent=False,
            look_for_keys=False,
        )
        _, stdout, _ = client.exec_command("echo ok")
        assert stdout.read() == b"ok\n"
        assert client_values(port) == EXPECTED
    transport = ka.integrations.paramiko.transport("127.0.0.1", POLICY, port, timeout=10)
    try:
        transport.start_client(timeout=10)
        assert client_values(port) == EXPECTED
    finally:
        transport.close()


def test_paramiko_closes_the_socket_when_connect_fails(sshd: tuple[int, Path]) -> None:
    paramiko = pytest.importorskip("paramiko", reason="paramiko is not installed")
    import ka.integrations.paramiko

    port, _ = sshd
    with paramiko.SSHClient() as client:
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        with pytest.raises(paramiko.AuthenticationException):
            ka.integrations.paramiko.connect(
                client,
                "127.0.0.1",
                POLICY,
                port,
                username="nobody-here",
                password="x",
                timeout=10,
                allow_agent=False,
                look_for_keys=False,
            )
    assert own_sockets(port) == []


def test_asyncssh(sshd: tuple[int, Path]) -> None:
    asyncssh = pytest.importorskip("asyncssh", reason="asyncssh is not installed")
    import ka.integrations.asyncssh

    port, key = sshd
    common = {"username": getpass.getuser(), "client_keys": [str(key)], "known_hosts": None}

    async def main() -> None:
        async with await ka.integrations.asyncssh.connect("127.0.0.1", POLICY, port, **common) as conn:
            assert (await conn.run("echo ok", check=True)).stdout == "ok\n"
            assert client_values(port) == EXPECTED
        # Without ka, asyncssh's tcp_keepalive=False turns SO_KEEPALIVE off even on a socket
        # that had it: the reason connect() passes tcp_keepalive from the policy.
        sock = await ka.integrations.asyncssh.open_socket("127.0.0.1", port, POLICY)
        async with asyncssh.connect("127.0.0.1", port, sock=sock, tcp_keepalive=False, **common):
            assert client_values(port) == (0, *EXPECTED[1:])
        with pytest.raises(ValueError, match="tcp_keepalive=False contradicts"):
            await ka.integrations.asyncssh.connect("127.0.0.1", POLICY, port, tcp_keepalive=False)
        off = ka.KeepAlive(enabled=False)
        async with await ka.integrations.asyncssh.connect("127.0.0.1", off, port, **common):
            assert client_values(port)[0] == 0

    asyncio.run(main())


@pytest.mark.parametrize("example", ["clients_paramiko.py", "clients_asyncssh.py"])
def test_documentation_examples(sshd: tuple[int, Path], example: str) -> None:
    pytest.importorskip(example[len("clients_") : -len(".py")], reason="the library is not installed")
    port, key = sshd
    assert EXAMPLE_VALUES in run_example(example, port, key)
