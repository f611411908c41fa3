"""ka.integrations: client libraries against real peers on loopback, checked on the client sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

import ka
import ka.integrations
from client_peers import http_origin, postgres_server, redis_server
from helpers import (
    EXPECTED,
    POLICY,
    TCP_KEEPCNT,
    TCP_KEEPIDLE,
    TCP_KEEPINTVL,
    TCP_USER_TIMEOUT,
    fresh_values,
    kernel_values,
    ss_timers,
    values_of,
)
from ka.integrations import (
    libpq_conninfo,
    libpq_options,
    postgres_server_settings,
    redis_options,
)

linux_only = pytest.mark.skipif(
    ka.capabilities().platform != "linux", reason="option numbers checked are Linux's"
)


def assert_carries_policy(sock: Any) -> None:
    """The client socket carries POLICY (getsockopt) and ss shows its keepalive timer running."""
    assert values_of(sock) == EXPECTED
    # Keyed by peer: another process may share an ephemeral port number with another peer.
    timer = ss_timers(sock.getsockname()[1])[sock.getpeername()[:2]]
    assert re.fullmatch(r"timer:\(keepalive,(3[0-3]sec|\d+ms),0\)", timer), timer


# -- the plain values -------------------------------------------------------------------------


@linux_only
def test_setsockopt_calls() -> None:
    tcp, sol = socket.IPPROTO_TCP, socket.SOL_SOCKET
    assert POLICY.setsockopt_calls() == [
        (sol, socket.SO_KEEPALIVE, 1),
        (tcp, TCP_KEEPIDLE, 33),
        (tcp, TCP_KEEPINTVL, 7),
        (tcp, TCP_KEEPCNT, 4),
        (tcp, TCP_USER_TIMEOUT, 12345),
    ]
    idle_only = [(sol, socket.SO_KEEPALIVE, 1), (tcp, TCP_KEEPIDLE, 60)]
    assert ka.KeepAlive(idle=60).setsockopt_calls() == idle_only
    assert ka.KeepAlive(enabled=False).setsockopt_calls() == [(sol, socket.SO_KEEPALIVE, 0)]
    from ka.integrations.kafka import socket_options  # needs no kafka library

    with pytest.raises(TypeError, match=r"policy must be a ka\.KeepAlive, not tuple"):
        socket_options((60, 10, 5))  # type: ignore[arg-type]


@linux_only
def test_setsockopt_calls_made_by_hand_match_ka_apply() -> None:
    with socket.socket() as by_hand, socket.socket() as by_ka:
        for level, option, value in POLICY.setsockopt_calls():
            by_hand.setsockopt(level, option, value)
        ka.apply(by_ka, POLICY)
        assert kernel_values(by_hand) == kernel_values(by_ka) == EXPECTED


@linux_only
def test_redis_and_libpq_mappings() -> None:
    assert redis_options(POLICY) == {
        "socket_keepalive": True,
        "socket_keepalive_options": {
            TCP_KEEPIDLE: 33,
            TCP_KEEPINTVL: 7,
            TCP_KEEPCNT: 4,
            TCP_USER_TIMEOUT: 12345,
        },
    }
    assert redis_options(ka.KeepAlive(enabled=False)) == {
        "socket_keepalive": False,
        "socket_keepalive_options": {},
    }
    with pytest.raises(ValueError, match="a user timeout needs an enabled policy"):
        redis_options(ka.KeepAlive(enabled=False, user_timeout=5))
    assert libpq_options(POLICY) == {
        "keepalives": 1,
        "keepalives_idle": 33,
        "keepalives_interval": 7,
        "keepalives_count": 4,
        "tcp_user_timeout": 12345,
    }
    assert libpq_conninfo(ka.KeepAlive(enabled=False)) == "keepalives=0"
    assert libpq_conninfo(ka.KeepAlive(idle=60)) == "keepalives=1 keepalives_idle=60"
    assert postgres_server_settings(POLICY) == {
        "tcp_keepalives_idle": "33",
        "tcp_keepalives_interval": "7",
        "tcp_keepalives_count": "4",
        "tcp_user_timeout": "12345",
    }
    assert ka.integrations.postgres_options(ka.KeepAlive(idle=60)) == "-c tcp_keepalives_idle=60"
    with pytest.raises(ValueError, match="the server always enables keepalive"):
        postgres_server_settings(ka.KeepAlive(enabled=False))


# -- HTTP clients against a local HTTP/1.1 server -----------------------------------------------


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    with http_origin() as port:
        yield f"http://127.0.0.1:{port}/"


def test_urllib3(http_url: str) -> None:
    pytest.importorskip("urllib3", reason="urllib3 is not installed")
    import ka.integrations.urllib3

    with ka.integrations.urllib3.pool_manager(POLICY) as http:
        response = http.request("GET", http_url, preload_content=False)
        sock = response.connection.sock  # type: ignore[union-attr]
        assert response.read() == b"ok"
        assert_carries_policy(sock)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1  # urllib3's default kept
        response.release_conn()


def test_requests(http_url: str) -> None:
    pytest.importorskip("requests", reason="requests is not installed")
    import ka.integrations.requests

    with ka.integrations.requests.session(POLICY) as session:
        response = session.get(http_url, stream=True, timeout=5)
        sock = response.raw.connection.sock
        assert response.content == b"ok"
        assert_carries_policy(sock)
    adapter = pickle.loads(pickle.dumps(ka.integrations.requests.KeepAliveAdapter(POLICY, pool_maxsize=3)))
    assert adapter.keepalive == POLICY
    assert adapter.poolmanager.connection_pool_kw["socket_options"][-5:] == POLICY.setsockopt_calls()


def test_httpx(http_url: str) -> None:
    httpx = pytest.importorskip("httpx", reason="httpx is not installed")
    import ka.integrations.httpx

    with httpx.Client(transport=ka.integrations.httpx.transport(POLICY)) as client:
        with client.stream("GET", http_url) as response:
            sock = response.extensions["network_stream"].get_extra_info("socket")
            assert response.read() == b"ok"
        assert_carries_policy(sock)


def test_httpx_async(http_url: str) -> None:
    httpx = pytest.importorskip("httpx", reason="httpx is not installed")
    import ka.integrations.httpx

    async def main() -> None:
        async with httpx.AsyncClient(transport=ka.integrations.httpx.async_transport(POLICY)) as client:
            async with client.stream("GET", http_url) as response:
                sock = response.extensions["network_stream"].get_extra_info("socket")
                assert await response.aread() == b"ok"
            assert_carries_policy(sock)

    asyncio.run(main())


def test_aiohttp(http_url: str) -> None:
    aiohttp = pytest.importorskip("aiohttp", reason="aiohttp is not installed")
    import ka.integrations.aiohttp

    async def main() -> None:
        async with aiohttp.ClientSession(connector=ka.integrations.aiohttp.connector(POLICY)) as session:
            async with session.get(http_url + "slow") as response:
                sock = response.connection.transport.get_extra_info("socket")
                assert await response.read() == b"ok"
            assert_carries_policy(sock)

    asyncio.run(main())


# -- redis-py against a real redis-server -------------------------------------------------------


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with redis_server(tmp_path_factory.mktemp("redis")) as port:
        yield port


@contextlib.contextmanager
def redis_socket(redis: Any, port: int, policy: ka.KeepAlive) -> Iterator[Any]:
    """The socket of a pooled connection of a redis-py client made with ``policy``, after a PING."""
    client = redis.Redis(host="127.0.0.1", port=port, **redis_options(policy))
    try:
        assert client.ping() is True
        connection = client.connection_pool.get_connection()
        try:
            yield connection._sock
        finally:
            client.connection_pool.release(connection)
    finally:
        client.close()


def test_redis(redis_port: int) -> None:
    redis = pytest.importorskip("redis", reason="redis-py is not installed")
    with redis_socket(redis, redis_port, POLICY) as sock:
        assert_carries_policy(sock)


def test_redis_policy_replaces_redis_py_defaults(redis_port: int) -> None:
    """Fields left as None keep the system's values, not redis-py's own keepalive defaults."""
    redis = pytest.importorskip("redis", reason="redis-py is not installed")
    system = fresh_values()
    cases = [(ka.KeepAlive(idle=45), (1, 45, system[2], system[3], 0)), (ka.KeepAlive(enabled=False), system)]
    for policy, expected in cases:
        with redis_socket(redis, redis_port, policy) as sock:
            assert values_of(sock) == expected


def test_redis_asyncio(redis_port: int) -> None:
    redis_asyncio = pytest.importorskip("redis.asyncio", reason="redis-py is not installed")

    async def main() -> None:
        client = redis_asyncio.Redis(host="127.0.0.1", port=redis_port, **redis_options(POLICY))
        try:
            assert await client.ping() is True
            connection = await client.connection_pool.get_connection()
            try:
                assert_carries_policy(connection._writer.get_extra_info("socket"))
            finally:
                await client.connection_pool.release(connection)
        finally:
            await client.aclose()

    asyncio.run(main())


# -- psycopg (libpq) against a real PostgreSQL server -------------------------------------------


@pytest.fixture(scope="module")
def postgres_port() -> Iterator[int]:
    with postgres_server() as port:
        yield port


def test_psycopg(postgres_port: int) -> None:
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
    with psycopg.connect(
        host="127.0.0.1",
        port=postgres_port,
        user="postgres",
        dbname="postgres",
        connect_timeout=10,
        options=ka.integrations.postgres_options(POLICY),
        **libpq_options(POLICY),
    ) as conn:
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as client:
            assert_carries_policy(client)
            local_port = client.getsockname()[1]
        shown = [
            conn.execute(f"SHOW {name}").fetchone()[0] for name in ("tcp_keepalives_idle", "tcp_user_timeout")
        ]
        assert shown == ["33", "12345"]
        # The server's end, found by its peer port: PostgreSQL applied the settings. Its reply may
        # still await the client's delayed ACK (a retransmission timer), hence the short wait.
        deadline = time.monotonic() + 2
        while True:
            server_end = ss_timers(postgres_port)[("127.0.0.1", local_port)]
            if server_end.startswith("timer:(keepalive,") or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert re.fullmatch(r"timer:\(keepalive,(3[0-3]sec|\d+ms),0\)", server_end), server_end
