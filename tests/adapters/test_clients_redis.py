"""redis-py 7.x and 8.x against a real redis-server: their own keepalive defaults, and the policy
replacing them. The 7.x release is installed with ``pip install --target`` into a temp dir (the
test skips where pip cannot reach a package index); each release runs in a child process that
prints the kernel values of its connection's socket."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import ka.integrations
from client_peers import linux_only, redis_server
from helpers import EXPECTED, POLICY, kernel_values

pytestmark = linux_only

REDIS_7 = "7.1.0"

_CLIENT = """
import json, os, socket, sys
import redis, ka, ka.integrations
from helpers import kernel_values

port = int(sys.argv[1])
out = {"version": redis.__version__}
policy = ka.KeepAlive(33, 7, 4, user_timeout=12.345)
for name, kwargs in (("default", {}), ("policy", ka.integrations.redis_options(policy))):
    client = redis.Redis(host="127.0.0.1", port=port, **kwargs)
    assert client.ping() is True
    connection = client.connection_pool.get_connection()
    out[name] = list(kernel_values(connection._sock))
    client.connection_pool.release(connection)
    client.close()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server_port:
        yield server_port


@pytest.fixture(scope="module")
def redis_7(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("redis-py-7")
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--target",  # with its dependencies: async-timeout below Python 3.11.3
            str(target),
            f"redis=={REDIS_7}",
        ],
        capture_output=True,
        text=True,
    )
    if installed.returncode != 0:
        pytest.skip(f"cannot install redis-py {REDIS_7} with pip: {installed.stderr.strip()[-300:]}")
    return target


def _run_client(port: int, path_first: Path | None) -> dict[str, object]:
    tests = str(Path(__file__).resolve().parents[1])
    python_path = [str(path_first)] if path_first else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*python_path, tests])}
    done = subprocess.run(
        [sys.executable, "-c", _CLIENT, str(port)], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _system_values() -> list[int]:
    with socket.socket() as fresh:
        return list(kernel_values(fresh))


def test_redis_py_7_leaves_keepalive_off(port: int, redis_7: Path) -> None:
    result = _run_client(port, redis_7)
    assert result["version"] == REDIS_7
    assert result["default"] == _system_values()  # socket_keepalive=False: SO_KEEPALIVE stays 0
    assert result["policy"] == list(EXPECTED)


def test_redis_py_8_has_its_own_defaults(port: int) -> None:
    redis = pytest.importorskip("redis", reason="redis-py is not installed")
    if int(redis.__version__.split(".")[0]) < 8:
        pytest.skip(f"redis-py {redis.__version__} is installed; this test reads 8.x's defaults")
    result = _run_client(port, None)
    assert result["version"] == redis.__version__
    system = _system_values()
    assert result["default"] == [1, 30, 5, 3, system[4]]  # redis-py 8's own: on, 30/5/3
    assert result["policy"] == list(EXPECTED)


def test_the_docstring_names_the_release_that_brought_the_defaults() -> None:
    doc = " ".join((ka.integrations.redis_options.__doc__ or "").split())
    assert "8.0.0" in doc and "5.2.1 to 7.1.0" in doc and "socket_keepalive=False" in doc
    assert "redis-py 6+" not in doc


def test_redis_sync_and_asyncio_in_process(port: int) -> None:
    redis = pytest.importorskip("redis", reason="redis-py is not installed")
    redis_asyncio = pytest.importorskip("redis.asyncio", reason="redis-py is not installed")
    import asyncio

    from client_peers import client_values

    client = redis.Redis(host="127.0.0.1", port=port, **ka.integrations.redis_options(POLICY))
    try:
        assert client.ping() is True
        assert client_values(port) == EXPECTED
    finally:
        client.close()

    async def main() -> None:
        aclient = redis_asyncio.Redis(host="127.0.0.1", port=port, **ka.integrations.redis_options(POLICY))
        try:
            assert await aclient.ping() is True
            assert client_values(port) == EXPECTED
        finally:
            await aclient.aclose()

    asyncio.run(main())


def test_kombu_redis_broker(port: int) -> None:
    """kombu passes socket_keepalive=None unless told otherwise, switching redis-py 8's defaults off."""
    kombu = pytest.importorskip("kombu", reason="kombu is not installed")
    pytest.importorskip("redis", reason="redis-py is not installed")
    from client_peers import client_values
    from ka.integrations.kombu import redis_transport_options

    url = f"redis://127.0.0.1:{port}/0"
    with kombu.Connection(url) as plain:
        plain.default_channel.client.ping()
        assert list(client_values(port)) == _system_values()  # no keepalive at all
    with kombu.Connection(url, transport_options=redis_transport_options(POLICY)) as conn:
        conn.default_channel.client.ping()
        assert client_values(port) == EXPECTED


def test_celery_redis_result_backend_takes_only_on_or_off(port: int) -> None:
    celery = pytest.importorskip("celery", reason="Celery is not installed")
    redis = pytest.importorskip("redis", reason="redis-py is not installed")
    if int(redis.__version__.split(".")[0]) < 8:
        pytest.skip(f"redis-py {redis.__version__}: this test reads 8.x's defaults")
    from client_peers import client_values

    app = celery.Celery("ka_test", backend=f"redis://127.0.0.1:{port}/1", set_as_current=False)
    app.conf.redis_socket_keepalive = True
    app.conf.broker_transport_options = ka.integrations.redis_options(POLICY)  # does not reach it
    try:
        assert app.backend.client.ping() is True
        assert client_values(port)[:4] == (1, 30, 5, 3)  # redis-py's defaults, not the policy
    finally:
        app.backend.client.close()
        # Celery hands the client its own pool, which close() leaves open: a later test reading
        # this process's sockets to the server would find this one too.
        app.backend.client.connection_pool.disconnect()


def test_documentation_example(port: int) -> None:
    pytest.importorskip("redis", reason="redis-py is not installed")
    from client_peers import EXAMPLE_VALUES, run_example

    assert EXAMPLE_VALUES in run_example("clients_redis.py", port)
