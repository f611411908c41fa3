"""requests and urllib3 through an HTTP proxy on loopback: the connection to the proxy carries
the policy, whether the proxy comes from ``proxies=``, the environment or a ``ProxyManager``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from client_peers import http_origin, linux_only, own_sockets, running_http_proxy
from helpers import EXPECTED, POLICY

pytestmark = linux_only


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    with http_origin() as port:
        yield f"http://127.0.0.1:{port}/"


def _through_proxy(port: int, clients: list[int]) -> None:
    found = own_sockets(port)
    assert len(found) == 1 and found[0][0] in clients, found
    assert found[0][1] == EXPECTED


@pytest.mark.parametrize("source", ["argument", "environment"])
def test_requests_through_a_proxy(origin: str, source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("requests", reason="requests is not installed")
    import ka.integrations.requests

    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with running_http_proxy() as proxy, ka.integrations.requests.session(POLICY) as session:
        proxy_url = f"http://127.0.0.1:{proxy.port}"
        if source == "environment":
            monkeypatch.setenv("HTTP_PROXY", proxy_url)
            proxies = None
        else:
            proxies = {"http": proxy_url}
        response = session.get(origin, proxies=proxies, timeout=5)
        assert response.text == "ok"
        _through_proxy(proxy.port, proxy.clients)
        assert proxy.requests_seen == [f"GET {origin}"]


def test_urllib3_proxy_manager(origin: str) -> None:
    urllib3 = pytest.importorskip("urllib3", reason="urllib3 is not installed")
    import ka.integrations.urllib3

    with running_http_proxy() as proxy:
        options = ka.integrations.urllib3.socket_options(POLICY)
        with urllib3.ProxyManager(f"http://127.0.0.1:{proxy.port}", socket_options=options) as manager:
            assert manager.request("GET", origin).data == b"ok"
            _through_proxy(proxy.port, proxy.clients)
