"""An aiohttp.web app whose connections carry the keepalive policy in KA_POLICY.

Run: ``KA_POLICY="idle=60 interval=10 count=5" python server_aiohttp.py 8080``
"""

import sys

from aiohttp import web

import ka.integrations.aiohttp


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello\n")


app = web.Application()
app.router.add_get("/", hello)

if __name__ == "__main__":
    # the listener carries the policy (from KA_POLICY here); run_app serves on it
    sock = ka.integrations.aiohttp.listener("127.0.0.1", int(sys.argv[1]))
    web.run_app(app, sock=sock, print=None)
