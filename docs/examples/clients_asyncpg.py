"""asyncpg with a keepalive policy on both ends, one connection and a pool:
``python clients_asyncpg.py PORT`` against PostgreSQL on 127.0.0.1 (user postgres, trust)."""

from __future__ import annotations

import asyncio
import sys

import asyncpg

import ka
import ka.integrations as kai
import ka.integrations.asyncpg

policy = ka.KeepAlive(idle=60, interval=10, count=5, user_timeout="auto")
dsn = f"postgresql://postgres@127.0.0.1:{sys.argv[1]}/postgres"
connection_class = ka.integrations.asyncpg.connection_class(policy)


async def main() -> None:
    conn = await asyncpg.connect(
        dsn, connection_class=connection_class, server_settings=kai.postgres_server_settings(policy)
    )
    try:
        sock = conn._transport.get_extra_info("socket")  # for the demonstration only
        print("client end:", ka.read(sock))
        print("server end: tcp_keepalives_idle =", await conn.fetchval("SHOW tcp_keepalives_idle"))
    finally:
        await conn.close()
    async with asyncpg.create_pool(dsn, connection_class=connection_class, min_size=2) as pool:
        print("pool:", await pool.fetchval("SELECT 1"))


asyncio.run(main())
