"""AMQP clients against a real RabbitMQ on loopback: kombu (py-amqp), Celery's broker connection
and pika. Each client socket is read back from this process's own descriptors."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

import ka
from client_peers import EXAMPLE_VALUES, client_values, linux_only, rabbitmq_server, run_example
from helpers import (
    EXPECTED,
    POLICY,
    TCP_KEEPCNT,
    TCP_KEEPIDLE,
    TCP_KEEPINTVL,
    TCP_USER_TIMEOUT,
    kernel_values,
)
from ka.integrations.kombu import amqp_socket_settings, amqp_transport_options

pytestmark = linux_only


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with rabbitmq_server(tmp_path_factory.mktemp("rabbitmq")) as server_port:
        yield server_port


def _system() -> tuple[int, int, int, int, int]:
    with socket.socket() as fresh:
        return kernel_values(fresh)


def test_amqp_socket_settings_fill_every_field() -> None:
    system = ka.system_defaults()
    assert amqp_socket_settings(POLICY) == {
        TCP_KEEPIDLE: 33,
        TCP_KEEPINTVL: 7,
        TCP_KEEPCNT: 4,
        TCP_USER_TIMEOUT: 12345,
    }
    assert amqp_socket_settings(ka.KeepAlive(idle=45)) == {
        TCP_KEEPIDLE: 45,
        TCP_KEEPINTVL: system.interval,
        TCP_KEEPCNT: system.count,
        TCP_USER_TIMEOUT: 0,
    }
    with pytest.raises(ValueError, match="py-amqp: it turns SO_KEEPALIVE on"):
        amqp_transport_options(ka.KeepAlive(enabled=False))


def test_kombu_amqp(port: int) -> None:
    kombu = pytest.importorskip("kombu", reason="kombu is not installed")
    url = f"amqp://guest:guest@127.0.0.1:{port}//"
    with kombu.Connection(url) as plain:  # py-amqp's own values, which the docs describe
        plain.connect()
        assert client_values(port) == (1, 60, 10, 9, 1000)
    system = _system()
    cases = [(POLICY, EXPECTED), (ka.KeepAlive(idle=45), (1, 45, system[2], system[3], 0))]
    for policy, expected in cases:
        with kombu.Connection(url, transport_options=amqp_transport_options(policy)) as conn:
            conn.connect()
            assert client_values(port) == expected


def test_celery_broker_connection(port: int) -> None:
    celery = pytest.importorskip("celery", reason="Celery is not installed")
    app = celery.Celery("ka_test", broker=f"pyamqp://guest:guest@127.0.0.1:{port}//", set_as_current=False)
    app.conf.broker_transport_options = amqp_transport_options(POLICY)
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        assert client_values(port) == EXPECTED


def test_pika(port: int) -> None:
    pika = pytest.importorskip("pika", reason="pika is not installed")
    import ka.integrations.pika

    assert ka.integrations.pika.tcp_options(POLICY) == {
        "TCP_KEEPIDLE": 33,
        "TCP_KEEPINTVL": 7,
        "TCP_KEEPCNT": 4,
        "TCP_USER_TIMEOUT": 12345,
    }
    parameters = pika.ConnectionParameters(
        "127.0.0.1",
        port,
        credentials=pika.PlainCredentials("guest", "guest"),
        tcp_options=ka.integrations.pika.tcp_options(POLICY),
    )
    connection = pika.BlockingConnection(parameters)
    try:
        assert client_values(port) == EXPECTED
    finally:
        connection.close()


def test_pika_refuses_what_it_cannot_express() -> None:
    import ka.integrations.pika

    with pytest.raises(ValueError, match="turns SO_KEEPALIVE on only together with"):
        ka.integrations.pika.tcp_options(ka.KeepAlive(user_timeout=5))
    assert ka.integrations.pika.tcp_options(ka.KeepAlive(enabled=False, user_timeout=5)) == {
        "TCP_USER_TIMEOUT": 5000
    }


@pytest.mark.parametrize("example", ["clients_celery.py", "clients_pika.py"])
def test_documentation_examples(port: int, example: str) -> None:
    pytest.importorskip(example[len("clients_") : -len(".py")], reason="the library is not installed")
    assert EXAMPLE_VALUES in run_example(example, port)
