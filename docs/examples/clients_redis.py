"""redis-py with a keepalive policy: ``python clients_redis.py PORT`` against a redis-server on 127.0.0.1."""

from __future__ import annotations

import socket
import sys
from typing import cast

import redis

import ka
import ka.integrations

policy = ka.KeepAlive(idle=60, interval=10, count=5, user_timeout="auto")
client = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), **ka.integrations.redis_options(policy))
try:
    client.ping()
    connection = client.connection_pool.get_connection()
    try:
        sock = cast(socket.socket, connection._sock)  # _sock: for the demonstration (typed as None)
        print("redis-py", redis.__version__, ka.read(sock))
    finally:
        client.connection_pool.release(connection)
finally:
    client.close()
