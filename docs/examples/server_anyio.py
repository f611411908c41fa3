"""An AnyIO echo server whose connections carry the keepalive policy in KA_POLICY.

Run: ``KA_POLICY="idle=60 interval=10 count=5" python server_anyio.py 8000``
"""

import sys

import anyio
from anyio.abc import SocketStream

import ka.integrations.anyio


async def echo(stream: SocketStream) -> None:
    async with stream:
        async for data in stream:
            await stream.send(data)


async def main(port: int) -> None:
    # as anyio.create_tcp_listener(...); the policy comes from KA_POLICY (or policy=...)
    listener = await ka.integrations.anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    await listener.serve(echo)


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]))
