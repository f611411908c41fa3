"""hypercorn from code, its listening sockets carrying a keepalive policy:
``python hypercorn_serve.py PORT``."""

import asyncio
import sys

import hypercorn.asyncio
from hello_app import asgi

import ka.integrations.hypercorn

if __name__ == "__main__":
    config = ka.integrations.hypercorn.Config()
    config.bind = [f"127.0.0.1:{sys.argv[1]}"]
    config.keepalive_policy = "idle=60 interval=10 count=5 user_timeout=auto"
    asyncio.run(hypercorn.asyncio.serve(asgi, config))  # type: ignore[arg-type]
