"""httpx/httpcore: the policy on every connection, direct and through HTTP and SOCKS5 proxies.

The proxies run in this process on loopback; each test reads the client's socket back from this
process's own descriptors (the one connected to the proxy, or to the origin when direct).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from client_peers import http_origin, linux_only, own_sockets, running_http_proxy, running_socks5_proxy
from helpers import EXPECTED, POLICY

httpx = pytest.importorskip("httpx", reason="httpx is not installed")
httpcore = pytest.importorskip("httpcore", reason="httpcore is not installed")
import ka.integrations.httpx as kahttpx  # noqa: E402

pytestmark = linux_only


@pytest.fixture(scope="module")
def tls() -> Any:
    trustme = pytest.importorskip("trustme", reason="trustme is not installed (test extra)")
    return trustme.CA()


@pytest.fixture(scope="module")
def origin() -> Iterator[int]:
    with http_origin() as port:
        yield port


@pytest.fixture(scope="module")
def tls_origin(tls: Any) -> Iterator[int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.issue_cert("127.0.0.1").configure_cert(context)
    with http_origin(context) as port:
        yield port


@pytest.fixture
def client_context(tls: Any) -> ssl.SSLContext:
    context = ssl.create_default_context()
    tls.configure_trust(context)
    return context


def _assert_policy_on_connection_to(port: int, proxy_clients: list[int] | None = None) -> None:
    found = own_sockets(port)
    assert len(found) == 1, f"expected one client connection to port {port}: {found}"
    local_port, values = found[0]
    assert values == EXPECTED
    if proxy_clients is not None:
        assert local_port in proxy_clients, "the request did not go through the proxy"


def _get(make_client: Any, url: str, check: Any, **kwargs: Any) -> None:
    """GET ``url``, then ``check()`` while the client still holds its connection in its pool."""
    with make_client(**kwargs) as client:
        assert client.get(url).text == "ok"
        check()


def _aget(make_client: Any, url: str, check: Any, **kwargs: Any) -> None:
    async def main() -> None:
        async with make_client(**kwargs) as client:
            response = await client.get(url)
            assert response.text == "ok"
            check()

    asyncio.run(main())


@pytest.fixture(params=["sync", "async"])
def run(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    sync = request.param == "sync"

    def go(url: str, check: Any, *, transport: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if transport is not None:  # httpx.Client(transport=ka transport) instead of ka's client()
            made = (kahttpx.transport if sync else kahttpx.async_transport)(POLICY, **transport)
            factory = httpx.Client if sync else httpx.AsyncClient
            kwargs["transport"] = made
        else:
            factory = kahttpx.client if sync else kahttpx.async_client
            kwargs = {"policy": POLICY, **kwargs}
        (_get if sync else _aget)(factory, url, check, **kwargs)

    return go


def test_direct(run: Any, origin: int) -> None:
    run(f"http://127.0.0.1:{origin}/", lambda: _assert_policy_on_connection_to(origin))


def test_http_proxy_forwarding(run: Any, origin: int) -> None:
    """An http:// URL through an HTTP proxy: absolute-form requests on the proxy connection."""
    with running_http_proxy() as proxy:
        url = f"http://127.0.0.1:{origin}/"
        run(
            url,
            lambda: _assert_policy_on_connection_to(proxy.port, proxy.clients),
            transport={"proxy": f"http://127.0.0.1:{proxy.port}"},
        )
        assert proxy.requests_seen == [f"GET {url}"]


def test_http_proxy_connect_tunnel(run: Any, tls_origin: int, client_context: ssl.SSLContext) -> None:
    """An https:// URL through an HTTP proxy: a CONNECT tunnel, TLS inside it."""
    with running_http_proxy() as proxy:
        run(
            f"https://127.0.0.1:{tls_origin}/",
            lambda: _assert_policy_on_connection_to(proxy.port, proxy.clients),
            proxy=f"http://127.0.0.1:{proxy.port}",
            verify=client_context,
        )
        assert proxy.requests_seen == [f"CONNECT 127.0.0.1:{tls_origin}"]


def test_socks5_proxy(run: Any, origin: int) -> None:
    pytest.importorskip("socksio", reason="socksio is not installed (httpx[socks])")
    with running_socks5_proxy() as proxy:
        run(
            f"http://127.0.0.1:{origin}/",
            lambda: _assert_policy_on_connection_to(proxy.port, proxy.clients),
            proxy=f"socks5://127.0.0.1:{proxy.port}",
        )
        assert proxy.requests_seen == [f"CONNECT 127.0.0.1:{origin}"]


def test_environment_proxies(run: Any, origin: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """With trust_env (httpx's default), client() keeps HTTP_PROXY working and carries the policy."""
    with running_http_proxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        url = f"http://127.0.0.1:{origin}/"
        run(url, lambda: _assert_policy_on_connection_to(proxy.port, proxy.clients))
        assert proxy.requests_seen == [f"GET {url}"]


def test_httpcore_socks_proxy_with_network_backend(origin: int) -> None:
    pytest.importorskip("socksio", reason="socksio is not installed (httpx[socks])")
    with (
        running_socks5_proxy() as proxy,
        httpcore.SOCKSProxy(
            proxy_url=f"socks5://127.0.0.1:{proxy.port}", network_backend=kahttpx.network_backend(POLICY)
        ) as pool,
    ):
        response = pool.request("GET", f"http://127.0.0.1:{origin}/")
        assert response.content == b"ok"
        _assert_policy_on_connection_to(proxy.port, proxy.clients)


def test_a_second_policy_replaces_the_first(origin: int) -> None:
    made = kahttpx.transport(POLICY)
    kahttpx._install(made, POLICY)
    backend = made._pool._network_backend
    assert isinstance(backend, kahttpx.KeepAliveBackend)
    assert isinstance(backend.backend, httpcore.SyncBackend)
    made.close()


def test_a_mount_ka_cannot_reach_is_refused() -> None:
    mock = httpx.MockTransport(lambda request: httpx.Response(200))
    with pytest.raises(TypeError, match=r"cannot give MockTransport .* a keepalive policy"):
        kahttpx.client(POLICY, mounts={"http://example.invalid": mock})
    with pytest.raises(TypeError, match=r"policy must be a ka\.KeepAlive"):
        kahttpx.client((1, 2, 3))  # type: ignore[arg-type]


def test_httpcore_async_pool_with_network_backend(origin: int) -> None:
    async def main() -> None:
        backend = kahttpx.async_network_backend(POLICY)
        async with httpcore.AsyncConnectionPool(network_backend=backend) as pool:
            response = await pool.request("GET", f"http://127.0.0.1:{origin}/")
            assert response.content == b"ok"
            _assert_policy_on_connection_to(origin)

    asyncio.run(main())


def test_a_failed_apply_closes_the_connection(origin: int, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(sock: object, policy: object) -> None:
        raise OSError(22, "refused for the test")

    monkeypatch.setattr(kahttpx, "apply", refuse)
    with kahttpx.client(POLICY) as client:
        with pytest.raises(httpx.ConnectError, match=r"could not apply .* refused for the test"):
            client.get(f"http://127.0.0.1:{origin}/")
        assert own_sockets(origin) == []

    async def main() -> None:
        async with kahttpx.async_client(POLICY) as client:
            with pytest.raises(httpx.ConnectError, match="could not apply"):
                await client.get(f"http://127.0.0.1:{origin}/")
            assert own_sockets(origin) == []

    asyncio.run(main())
