"""pika with a keepalive policy: ``python clients_pika.py AMQP_PORT`` against RabbitMQ on
127.0.0.1 (guest/guest)."""

from __future__ import annotations

import sys

import pika

import ka
import ka.integrations.pika

policy = ka.KeepAlive(idle=60, interval=10, count=5, user_timeout="auto")
parameters = pika.ConnectionParameters(
    "127.0.0.1",
    int(sys.argv[1]),
    credentials=pika.PlainCredentials("guest", "guest"),
    tcp_options=ka.integrations.pika.tcp_options(policy),
)
connection = pika.BlockingConnection(parameters)
try:
    sock = connection._impl._transport._sock  # for the demonstration only
    print("pika", pika.__version__, ka.read(sock))
finally:
    connection.close()
