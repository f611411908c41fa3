"""A Celery app whose broker connections carry a keepalive policy:
``python clients_celery.py AMQP_PORT`` against RabbitMQ on 127.0.0.1 (guest/guest)."""

from __future__ import annotations

import sys

import celery

import ka
import ka.integrations.kombu

policy = ka.KeepAlive(idle=60, interval=10, count=5, user_timeout="auto")
app = celery.Celery("example", broker=f"pyamqp://guest:guest@127.0.0.1:{sys.argv[1]}//")
app.conf.broker_transport_options = ka.integrations.kombu.amqp_transport_options(policy)
# With a Redis broker: app.conf.broker_transport_options = redis_transport_options(policy)

with app.connection_for_write() as conn:
    conn.ensure_connection(max_retries=1)
    sock = conn.connection.sock  # py-amqp's socket, for the demonstration
    print("broker connection:", ka.read(sock))
