"""uvicorn from code, its listening socket carrying a keepalive policy: ``python uvicorn_run.py PORT``."""

import sys

import ka.integrations.uvicorn

if __name__ == "__main__":
    ka.integrations.uvicorn.run(
        "hello_app:asgi",
        host="127.0.0.1",
        port=int(sys.argv[1]),
        workers=2,
        keepalive="idle=60 interval=10 count=5 user_timeout=auto",
        log_level="warning",
    )
