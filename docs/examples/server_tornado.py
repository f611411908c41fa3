"""A tornado app whose connections carry the keepalive policy in KA_POLICY.

Run: ``KA_POLICY="idle=60 interval=10 count=5" python server_tornado.py 8888``
"""

import asyncio
import sys

import tornado.web

import ka.integrations.tornado


class Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("hello\n")


async def main(port: int) -> None:
    app = tornado.web.Application([("/", Hello)])
    # as app.listen(port, "127.0.0.1"); the policy comes from KA_POLICY (or policy=...)
    ka.integrations.tornado.listen(app, port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
