"""
Keepalive: XEP-0199 pings with a deadline.
"""

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel.subprotocols import StreamManager
from wokkel.test.helpers import XmlStreamStub

from client_proxy.keepalive import NS_PING, KeepAlive, StandbyWatch


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


def test_a_new_interval_takes_effect_at_once():
    clock, stub, manager = setup()
    [keepalive] = [h for h in manager if isinstance(h, KeepAlive)]
    clock.advance(5)
    keepalive.setInterval(2)
    clock.advance(2)
    assert len(stub.output) == 1, "pinged 2 s after the change"


# The standby watch: pings to the shared JID from the instance's own.

INSTANCE, SHARED = JID("node2.proxy.example.org"), JID("proxy.example.org")


def watching(initialized=True):
    clock = Clock()
    manager = StreamManager(Factory(), reactor=clock)
    stub = XmlStreamStub()
    stub.xmlstream.transport = StringTransport()
    manager._connected(stub.xmlstream)
    watch = StandbyWatch(INSTANCE, SHARED, 2, clock)
    watch.setHandlerParent(manager)
    if initialized:
        manager._authd(stub.xmlstream)
    calls = []
    return clock, stub, manager, watch, calls


def arm(watch, calls):
    watch.watch(lambda: calls.append("take over"), lambda: calls.append("lost"))


def error(ping, condition, type="wait"):
    answer = pong(ping, "error")
    answer.addElement("error")["type"] = type
    answer.error.addElement(("urn:ietf:params:xml:ns:xmpp-stanzas", condition))
    return answer


def test_the_watch_pings_only_when_asked():
    clock, stub, manager, watch, calls = watching()
    clock.advance(10)
    assert stub.output == []
    arm(watch, calls)
    clock.advance(2)
    ping = stub.output.pop()
    assert (ping["to"], ping["from"], ping.firstChildElement().uri) == (
        "proxy.example.org",
        "node2.proxy.example.org",
        NS_PING,
    )
    watch.stop()
    clock.advance(10)
    assert stub.output == [] and calls == []


def test_answers_from_the_other_instance_are_no_news():
    clock, stub, manager, watch, calls = watching()
    arm(watch, calls)
    for answer in (pong, lambda p: error(p, "service-unavailable", "cancel")):
        clock.advance(2)
        stub.send(answer(stub.output.pop()))
    clock.advance(2)
    stub.output.pop()
    clock.advance(2)  # that one timed out: no news either
    assert calls == [] and len(stub.output) == 1


def test_the_server_saying_nobody_is_there_takes_over_once():
    clock, stub, manager, watch, calls = watching()
    arm(watch, calls)
    clock.advance(2)
    stub.send(error(stub.output.pop(), "remote-server-timeout"))
    assert calls == ["take over"]
    clock.advance(10)
    assert stub.output == [], "the watch stops"


def test_armed_before_its_connection_is_up():
    clock, stub, manager, watch, calls = watching(initialized=False)
    arm(watch, calls)
    clock.advance(10)
    assert stub.output == []
    manager._authd(stub.xmlstream)
    clock.advance(2)
    assert len(stub.output) == 1


def test_its_connection_lost_is_told():
    clock, stub, manager, watch, calls = watching()
    arm(watch, calls)
    manager._disconnected(None)
    assert calls == ["lost"]
    assert clock.getDelayedCalls() == []
