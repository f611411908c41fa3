"""asyncssh over a socket carrying a keepalive policy:
``python clients_asyncssh.py PORT KEY_FILE`` against an sshd on 127.0.0.1 that takes the key."""

from __future__ import annotations

import asyncio
import getpass
import sys

import asyncssh

import ka
import ka.integrations.asyncssh

policy = ka.KeepAlive(idle=60, interval=10, count=5, user_timeout="auto")


async def main() -> None:
    async with await ka.integrations.asyncssh.connect(
        "127.0.0.1", policy, int(sys.argv[1]),
        username=getpass.getuser(), client_keys=[sys.argv[2]], known_hosts=None,  # a throwaway server
    ) as conn:  # fmt: skip
        print("asyncssh", asyncssh.__version__, ka.read(conn.get_extra_info("socket")))


asyncio.run(main())
