"""Clients with no Debian server to test against (Kafka, MongoDB), each pointed at a loopback
listener that accepts and stays silent: the client's socket is read back while it waits."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from client_peers import linux_only, read_back
from helpers import EXPECTED, POLICY

pytestmark = linux_only


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A listener that accepts connections and never answers; closes them all at the end."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except socket.timeout:  # TimeoutError only from 3.10 on
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def _in_thread(work: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_kafka_python(silent_port: int) -> None:
    kafka = pytest.importorskip("kafka", reason="kafka-python is not installed")
    import ka.integrations.kafka

    options = ka.integrations.kafka.socket_options(POLICY)
    assert options[0] == (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # kafka-python's default kept
    failures: list[BaseException] = []
    clients: list[Any] = []

    def client(**configs: Any) -> Any:
        # The producer's constructor raises without closing the client it made (its wake-up
        # socketpair then leaks until a garbage collection warns about it in a later test).
        made = kafka.KafkaProducer.DEFAULT_CONFIG["kafka_client"](**configs)
        clients.append(made)
        return made

    def bootstrap() -> None:
        try:
            kafka.KafkaProducer(
                bootstrap_servers=f"127.0.0.1:{silent_port}",
                bootstrap_timeout_ms=1500,
                socket_options=options,
                kafka_client=client,
            )
        except kafka.errors.KafkaError as exc:  # the silent broker never answers: expected
            failures.append(exc)

    thread = _in_thread(bootstrap)
    try:
        assert read_back(silent_port) == EXPECTED
        thread.join(timeout=20)
        assert failures, "the producer bootstrapped from a listener that never answers"
    finally:
        thread.join(timeout=20)
        for made in clients:
            made.close()


def test_pymongo_sets_and_caps_keepalive_itself(silent_port: int) -> None:
    pymongo = pytest.importorskip("pymongo", reason="pymongo is not installed")
    import ka.integrations.pymongo

    client = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{silent_port}/",
        connect=True,
        serverSelectionTimeoutMS=500,
        connectTimeoutMS=500,
    )
    try:
        expected = ka.integrations.pymongo.keepalive_values()
        values = read_back(silent_port)
        assert values == (1, expected.idle, expected.interval, expected.count, 0)
    finally:
        client.close()


def test_pymongo_values_for_other_system_defaults() -> None:
    import ka.integrations.pymongo
    from ka.system import SystemDefaults

    low = SystemDefaults(idle=30, interval=5, count=3, source="test")
    high = SystemDefaults(idle=7200, interval=75, count=9, source="test")
    assert ka.integrations.pymongo.keepalive_values(low) == ka.KeepAlive(30, 5, 3)
    assert ka.integrations.pymongo.keepalive_values(high) == ka.KeepAlive(120, 10, 9)
