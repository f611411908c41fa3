"""A Twisted echo server whose connections carry the keepalive policy in KA_POLICY.

Run: ``KA_POLICY="idle=60 interval=10 count=5" python server_twisted.py 8000``
"""

import sys

from twisted.internet import protocol, reactor

import ka.integrations.twisted


class Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        # zope interfaces declare methods without self, which mypy cannot follow
        self.transport.write(data)  # type: ignore[union-attr, call-arg]


if __name__ == "__main__":
    factory = protocol.Factory.forProtocol(Echo)
    # as reactor.listenTCP(port, factory, interface=...); the policy comes from KA_POLICY
    ka.integrations.twisted.listen_tcp(int(sys.argv[1]), factory, interface="127.0.0.1")  # type: ignore[arg-type]
    reactor.run()  # type: ignore[misc]
