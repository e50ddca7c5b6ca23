"""
The floor of an external component on Twisted: the least a component can
do to proxy an IQ, for comparison with client-proxy in the same run
(C{iq_throughput.py --phases direct,proxied,floor}).

A process that connects to the server's component port (XEP-0114), then
splits the stream with client-proxy's own splitter (expat, the outer tag
read, the payload copied as bytes) and rewrites every IQ in one step, with
nothing else: a request goes to one fixed resource of the target, from
C{<component>/<requester>}; an answer from the target goes back to the
requester its C{to} names. No table of requests in flight (an answer is
forwarded whoever sent it), no timeouts, no limits, no checks of the
addresses, no presence: none of what client-proxy promises. What one read
brings is written in one piece when the read is done, as client-proxy
does.

  python benchmarks/floor.py PORT COMPONENT SECRET RESOURCE
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from twisted.internet import protocol, reactor  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint  # noqa: E402
from twisted.words.protocols.jabber import xmlstream  # noqa: E402

from client_proxy.fastpath import StanzaSplitter, iqBytes  # noqa: E402


_STREAM_ID = re.compile(rb"""\sid=['"]([^'"]+)""")


class Floor(protocol.Protocol):
    def __init__(self, component: str, secret: str, resource: str) -> None:
        self.component = component
        self.secret = secret
        self.resource = resource
        self.target = resource.partition("/")[0]
        self.prefix = component + "/"
        self.out: list[bytes] = []
        self.splitter = StanzaSplitter(self.passThrough)
        self.splitter.onIQ = self.iqReceived

    def connectionMade(self) -> None:
        self.transport.write(
            (
                "<stream:stream xmlns='jabber:component:accept'"
                " xmlns:stream='http://etherx.jabber.org/streams' to='%s'>" % (self.component,)
            ).encode()
        )

    def passThrough(self, data: bytes) -> None:
        # The stream header brings the id the handshake hashes with the
        # secret (XEP-0114, 3); nothing else but the handshake's answer
        # comes by this way.
        header = _STREAM_ID.search(data) if b"<stream:stream" in data else None
        if header is not None:
            digest = xmlstream.hashPassword(header.group(1).decode(), self.secret)
            self.transport.write(b"<handshake>%s</handshake>" % digest.encode())
        elif b"<handshake" in data:
            print("ready", flush=True)

    def iqReceived(self, iq: dict[str, str], inner: bytes) -> bool:
        sender = iq.get("from", "")
        if sender.partition("/")[0] == self.target:
            iq["to"] = iq.get("to", "")[len(self.prefix) :]
            iq["from"] = self.component
        else:
            iq["to"] = self.resource
            iq["from"] = self.prefix + sender
        self.out.append(iqBytes(iq, inner))
        return True

    def dataReceived(self, data: bytes) -> None:
        self.splitter.feed(data)
        if self.out:
            self.transport.write(b"".join(self.out))
            self.out = []


def main(argv: list[str]) -> int:
    port, component, secret, resource = argv
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", int(port))
    connected = endpoint.connect(
        protocol.Factory.forProtocol(lambda: Floor(component, secret, resource))
    )
    connected.addErrback(lambda failure: (print(failure, file=sys.stderr), reactor.stop()))
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
