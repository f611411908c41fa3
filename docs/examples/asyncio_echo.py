"""An asyncio echo server and client, both ends carrying a keepalive policy (ka.aio)."""

from __future__ import annotations

import asyncio

import ka
import ka.aio

POLICY = ka.KeepAlive(idle=60, interval=10, count=5)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Runs after the accepted socket has the policy, from the listener or from ka.
    settings = ka.read(writer.get_extra_info("socket"))
    line = await reader.readline()
    writer.write(f"{settings.matches(POLICY)} ".encode() + line)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def main() -> None:
    server = await ka.aio.start_server(handle, "127.0.0.1", 0, keepalive=POLICY)
    async with server:
        print("mode:", ka.aio.plans(server)[0].mode)  # "inherit" on Linux, "per-accept" on macOS
        port = server.sockets[0].getsockname()[1]
        reader, writer = await ka.aio.open_connection("127.0.0.1", port, keepalive=POLICY)
        client_side = ka.read(writer.get_extra_info("socket"))
        writer.write(b"hello\n")
        answer = (await reader.readline()).decode().strip()
        print("client side carries the policy:", client_side.matches(POLICY))
        print("server side carries the policy, and echoes:", answer)
        assert client_side.matches(POLICY) and answer == "True hello", answer
        writer.close()
        await writer.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
