"""kafka-python (checked against kafka-python 3.0.12): ``socket_options``. ::

    options = ka.integrations.kafka.socket_options(policy)
    producer = kafka.KafkaProducer(bootstrap_servers="127.0.0.1:9092", socket_options=options)

``KafkaProducer``, ``KafkaConsumer`` and ``KafkaAdminClient`` take ``socket_options``, a list of
``setsockopt`` argument tuples that REPLACES their default ``[(IPPROTO_TCP, TCP_NODELAY, 1)]``;
``socket_options`` here keeps that default and adds the policy. aiokafka has no such hook: see
the documentation page on libraries without a socket hook.
"""

from __future__ import annotations

import socket

from ..policy import KeepAlive, require_policy
from . import SocketOption

__all__ = ["socket_options"]


def socket_options(policy: KeepAlive) -> list[SocketOption]:
    """kafka-python's default ``(IPPROTO_TCP, TCP_NODELAY, 1)`` followed by the policy's triples."""
    return [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1), *require_policy(policy).setsockopt_calls()]
