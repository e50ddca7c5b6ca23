"""
Keepalive: XEP-0199 pings with a deadline.
"""

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel.subprotocols import StreamManager
from wokkel.test.helpers import XmlStreamStub

from client_proxy.keepalive import NS_PING, KeepAlive


class Factory:
    def addBootstrap(self, event, fn):
        pass


def setup():
    clock = Clock()
    manager = StreamManager(Factory(), reactor=clock)
    stub = XmlStreamStub()
    stub.xmlstream.transport = StringTransport()
    manager._connected(stub.xmlstream)
    handler = KeepAlive(JID("proxy.example.org"), JID("example.org"), 10, clock)
    handler.setHandlerParent(manager)
    manager._authd(stub.xmlstream)
    return clock, stub, manager


def pong(ping, type="result"):
    answer = domish.Element((None, "iq"))
    answer["type"] = type
    answer["id"] = ping["id"]
    answer["from"] = ping["to"]
    return answer


def test_pings_and_stays_while_answered():
    clock, stub, manager = setup()
    for _ in range(3):
        clock.advance(10)
        ping = stub.output.pop()
        assert (ping["to"], ping["from"], ping.firstChildElement().uri) == (
            "example.org",
            "proxy.example.org",
            NS_PING,
        )
        stub.send(pong(ping, "error"))
    assert not stub.xmlstream.transport.disconnecting


def test_unanswered_ping_drops_the_connection():
    clock, stub, manager = setup()
    clock.advance(10)
    stub.output.pop()
    clock.advance(9)
    assert not stub.xmlstream.transport.disconnecting
    clock.advance(1)
    assert stub.xmlstream.transport.disconnecting
    assert stub.output == [], "no new ping on a dead connection"


def test_stops_with_the_connection():
    clock, stub, manager = setup()
    manager._disconnected(None)
    assert clock.getDelayedCalls() == []
