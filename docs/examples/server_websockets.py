"""A websockets echo server whose connections carry the keepalive policy in KA_POLICY.

Run: ``KA_POLICY="idle=60 interval=10 count=5" python server_websockets.py 8765``
"""

import asyncio
import sys

from websockets.asyncio.server import ServerConnection

import ka.integrations.websockets


async def echo(websocket: ServerConnection) -> None:
    async for message in websocket:
        await websocket.send(message)


async def main(port: int) -> None:
    # policy=None: the policy comes from KA_POLICY; pass a ka.KeepAlive or a string to set it here
    async with ka.integrations.websockets.serve(echo, "127.0.0.1", port) as server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
