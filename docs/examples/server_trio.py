"""A trio echo server whose connections carry the keepalive policy in KA_POLICY.

Run: ``KA_POLICY="idle=60 interval=10 count=5" python server_trio.py 8000``
"""

import sys

import trio

import ka.integrations.trio


async def echo(stream: trio.SocketStream) -> None:
    async for data in stream:
        await stream.send_all(data)


if __name__ == "__main__":
    # as trio.serve_tcp(echo, port, host=...); the policy comes from KA_POLICY (or policy=...)
    trio.run(lambda: ka.integrations.trio.serve_tcp(echo, int(sys.argv[1]), host="127.0.0.1"))
