"""
The fast path: stanzas found with expat, IQs taken as bytes.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.abstract import FileDescriptor
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish import domish

from client_proxy.fastpath import (
    FastXmlStream,
    childElements,
    StanzaSplitter,
    compact,
    errorCondition,
    errorIQBytes,
    escape,
    iqBytes,
    isBounce,
)

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams'"
    b" xmlns='jabber:component:accept' from='proxy.example.org' id='x'>"
)
STANZAS = (
    b"<iq type='result' id='a&gt;' to='x' note='has > inside'/>"
    b"<iq type='get' id='2'>  <q xmlns='u'>t&amp;x<b/>\xc3\xa9</q></iq>\n"
    b"<presence from='s@x/r'/>"
    b"<iq type='set' id='declined'></iq >"
    b"<message><body>hi</body></message>"
)
STREAM = HEADER + STANZAS + b"</stream:stream>"


def split(data, chunk, accept=lambda attributes: attributes["id"] != "declined"):
    passed, taken = [], []
    splitter = StanzaSplitter(passed.append)
    splitter.onIQ = lambda attributes, inner: (
        taken.append((attributes, inner)) or accept(attributes)
    )
    for i in range(0, len(data), chunk):
        splitter.feed(data[i : i + chunk])
    return b"".join(passed), taken


@pytest.mark.parametrize("chunk", [1, 2, 5, 64, len(STREAM)])
def test_split_at_any_read_boundary(chunk):
    passed, taken = split(STREAM, chunk)
    assert passed == (
        HEADER
        + b"\n<presence from='s@x/r'/><iq type='set' id='declined'></iq >"
        + b"<message><body>hi</body></message></stream:stream>"
    )
    assert taken == [
        ({"type": "result", "id": "a>", "to": "x", "note": "has > inside"}, b""),
        ({"type": "get", "id": "2"}, b"  <q xmlns='u'>t&amp;x<b/>\xc3\xa9</q>"),
        ({"type": "set", "id": "declined"}, b""),
    ]


def test_without_a_handler_everything_passes():
    passed = []
    splitter = StanzaSplitter(passed.append)
    splitter.feed(STREAM)
    assert b"".join(passed) == STREAM


def test_malformed_stream_passes_through_from_the_error_on():
    passed, taken = split(HEADER + b"<iq type='get' id='1'></message>rest", 3)
    assert b"".join([passed]).startswith(HEADER)
    assert passed.endswith(b"</message>rest")
    assert taken == []


def test_escape():
    assert escape("plain") == "plain"
    assert escape("a'b<c&d>e\nf") == "a&apos;b&lt;c&amp;d&gt;e&#10;f"


def test_iq_bytes_round_trip_through_a_real_parser():
    attributes = {"type": "get", "to": "a'b<c&d\n", "xml:lang": "en"}
    parsed = []
    stream = domish.elementStream()
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = parsed.append
    stream.parse(b"<stream xmlns='jabber:client'>")
    stream.parse(iqBytes(attributes, b"<q xmlns='u'>x</q>"))
    stream.parse(iqBytes(attributes, b""))
    stream.parse(errorIQBytes("1", "a", "b", "service-unavailable", "cancel", "no <one>"))
    assert parsed[0]["to"] == "a'b<c&d\n"
    assert parsed[0].firstChildElement().uri == "u"
    assert parsed[1].children == []
    error = parsed[2].firstChildElement()
    assert (error["type"], [c.name for c in error.elements()]) == (
        "cancel",
        ["service-unavailable", "text"],
    )


def test_fast_stream_hands_iqs_over_and_dispatches_the_rest():
    xs = FastXmlStream(xmlstream.ConnectAuthenticator("proxy.example.org"))
    xs.makeConnection(StringTransport())
    dispatched = []
    xs.addObserver("/*", dispatched.append)
    taken = []
    xs.setIQHandler(lambda attributes, inner: taken.append(attributes["id"]) or True)
    xs.dataReceived(STREAM)
    assert taken == ["a>", "2", "declined"]
    assert [e.name for e in dispatched] == ["presence", "message"]


def test_error_condition():
    assert errorCondition(
        b"<error type='cancel'><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>x</text>"
        b"<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
    ) == "item-not-found"
    assert errorCondition(b"<error type='cancel'/>") == "undefined-condition"


def test_an_unusual_iq_reaches_the_handler_through_the_element_parser():
    """
    A prefixed stanza name is not what the splitter looks for: the element
    parser gets it, and the handler still does.
    """
    xs = FastXmlStream(xmlstream.ConnectAuthenticator("proxy.example.org"))
    xs.makeConnection(StringTransport())
    taken = []
    xs.setIQHandler(lambda attributes, inner: taken.append((attributes, inner)) or True)
    xs.dataReceived(
        HEADER
        + b"<c:iq xmlns:c='jabber:component:accept' type='get' id='odd' xml:lang='en'>"
        b"<q xmlns='u'>x &amp; y</q></c:iq>"
    )
    [(attributes, inner)] = taken
    assert attributes == {"type": "get", "id": "odd", "xml:lang": "en"}
    assert inner == b"<q xmlns='u'>x &amp; y</q>"


def test_is_bounce():
    condition = b"<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
    text = b"<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>User session not found</text>"
    assert isBounce(b"<error type='cancel'>" + condition + b"</error>")
    # ejabberd's: the request's payload, then the error with a text.
    assert isBounce(b"<q xmlns='u'/><error type='cancel'>" + condition + text + b"</error>")
    assert not isBounce(b"<error type='cancel'><item-not-found xmlns='x'/></error>")
    # The requester's payload, echoed, does not count.
    assert not isBounce(b"<q xmlns='u'>" + condition + b"</q>")


def test_error_condition_whatever_the_prefix_or_order():
    assert (
        errorCondition(
            b"<error type='cancel'><s:text xmlns:s='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
            b"<s:gone xmlns:s='urn:ietf:params:xml:ns:xmpp-stanzas'>x</s:gone></error>"
        )
        == "gone"
    )
    assert errorCondition(b"<error/>") == "undefined-condition"
    assert errorCondition(b"<error><unclosed></error>") == "undefined-condition"


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from("\"'<>&\r\n\t"), max_size=50))
def test_compact_keeps_the_text(text):
    """Written again compactly, a stanza reads the same."""
    element = domish.Element((None, "iq"))
    element["a"] = text
    element.addElement(("urn:x", "q"), content=text)["b"] = text
    stanza = element.toXml().encode("utf-8")
    smaller = compact(stanza)
    assert len(smaller) <= len(stanza)
    [before] = parse(stanza)
    [after] = parse(smaller)
    assert after.toXml() == before.toXml()


def test_compact_undoes_prosodys_quotes():
    stanza = b"<iq type='get'><q xmlns='u'>" + b"&quot;&apos;" * 1000 + b"</q></iq>"
    assert compact(stanza) == b"<iq type='get'><q xmlns='u'>" + b"\"'" * 1000 + b"</q></iq>"


def parse(data):
    parsed = []
    stream = domish.elementStream()
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = parsed.append
    stream.parse(b"<s>" + data)
    return parsed


def stream_with(handler, header=HEADER):
    xs = FastXmlStream(xmlstream.ConnectAuthenticator("proxy.example.org"))
    xs.makeConnection(StringTransport())
    xs.setIQHandler(handler)
    xs.dataReceived(header)
    return xs


def test_a_declined_iq_is_handed_over_once():
    """One dispatch per IQ: declined on the fast path, not offered again."""
    calls = []
    xs = stream_with(lambda attributes, inner: calls.append(attributes["id"]) and False)
    parsed = []
    xs.addObserver("/iq", parsed.append)
    xs.dataReceived(b"<iq type='result' id='declined'/>")
    assert calls == ["declined"]
    assert [el["id"] for el in parsed] == ["declined"], "other handlers still get it"


def test_an_iq_using_a_prefix_of_the_root_goes_to_the_element_parser():
    """
    Its bytes mean something only in this stream: the element parser,
    which knows the prefix, hands it over as an element, written out with
    its namespace.
    """
    header = HEADER.replace(b" id='x'>", b" xmlns:r='urn:root' id='x'>")
    taken = []
    xs = stream_with(lambda attributes, inner: taken.append(inner) or True, header)
    xs.dataReceived(b"<iq type='get' id='1'><r:q/></iq><iq type='get' id='2'><q xmlns='u'/></iq>")
    first, second = taken
    [element] = parse(first)
    assert (element.uri, element.name) == ("urn:root", "q"), "declared where it is used"
    assert second == b"<q xmlns='u'/>"


class Socket(FileDescriptor):
    """
    A socket's transport, on a memory reactor: it takes at most
    C{room} bytes per send, or fails with C{error}.
    """

    def __init__(self, reactor, room=1 << 20, error=None):
        super().__init__(reactor)
        self.connected = True
        self.room = room
        self.error = error
        self.sent = []

    def writeSomeData(self, data):
        if self.error is not None:
            return self.error
        taken = bytes(data[: self.room])
        if taken:
            self.sent.append(taken)
        return len(taken)


def echoing_stream(socket):
    """
    A fast stream on C{socket} that answers every IQ get with a result.
    """
    xs = FastXmlStream(xmlstream.ConnectAuthenticator("proxy.example.org"))
    xs.makeConnection(socket)

    def answer(attributes, inner):
        xs.send(b"<iq type='result' id='%s'/>" % attributes["id"].encode())
        return True

    xs.setIQHandler(answer)
    xs.dataReceived(HEADER)
    while socket.reactor.getWriters():  # the reactor's turns: the header
        socket.doWrite()
    socket.sent.clear()
    return xs


def test_what_a_read_sends_goes_to_the_socket_when_the_read_is_done():
    """
    Every answer a read brings out leaves in one send, during the read,
    without the reactor's turn: the transport is never registered.
    """
    reactor = MemoryReactor()
    socket = Socket(reactor)
    xs = echoing_stream(socket)
    xs.dataReceived(b"<iq type='get' id='1'/><iq type='get' id='2'/>")
    assert socket.sent == [b"<iq type='result' id='1'/><iq type='result' id='2'/>"]
    assert reactor.getWriters() == []


def test_what_the_socket_does_not_take_is_left_to_the_transport():
    """
    The rest waits in the transport, registered with the reactor; while it
    holds anything, what later reads send goes after it, never straight to
    the socket.
    """
    reactor = MemoryReactor()
    socket = Socket(reactor, room=10)
    xs = echoing_stream(socket)
    xs.dataReceived(b"<iq type='get' id='1'/>")
    assert socket.sent == [b"<iq type='"]
    assert reactor.getWriters() == [socket]
    xs.dataReceived(b"<iq type='get' id='2'/>")
    assert socket.sent == [b"<iq type='"], "nothing overtakes what is buffered"
    socket.room = 1 << 20
    socket.doWrite()
    assert b"".join(socket.sent) == b"<iq type='result' id='1'/><iq type='result' id='2'/>"
    assert reactor.getWriters() == []


def test_a_broken_socket_is_left_to_the_reactor():
    """
    A send that finds the connection lost leaves the bytes with the
    transport, registered: the reactor's next turn meets the error and
    ends the connection as always.
    """
    reactor = MemoryReactor()
    socket = Socket(reactor)
    xs = echoing_stream(socket)
    socket.error = ConnectionLost()
    xs.dataReceived(b"<iq type='get' id='1'/>")
    assert reactor.getWriters() == [socket]
    assert isinstance(socket.doWrite(), ConnectionLost)


def test_sends_outside_a_read_wait_for_the_reactor():
    reactor = MemoryReactor()
    socket = Socket(reactor)
    xs = echoing_stream(socket)
    xs.send(b"<presence/>")
    assert socket.sent == []
    assert reactor.getWriters() == [socket]


def test_presence_is_offered_to_its_handler():
    """
    Presence goes to the presence handler, IQs to the IQ handler; what
    either declines, and messages, flow on.
    """
    passed, offered = [], []
    splitter = StanzaSplitter(passed.append)
    splitter.onPresence = lambda attributes, inner: (
        offered.append((attributes, inner)) or attributes.get("type") != "subscribed"
    )
    splitter.feed(HEADER + STANZAS + b"<presence type='subscribed'><x/></presence>")
    assert offered == [
        ({"from": "s@x/r"}, b""),
        ({"type": "subscribed"}, b"<x/>"),
    ]
    assert b"".join(passed) == (
        HEADER
        + b"<iq type='result' id='a&gt;' to='x' note='has > inside'/>"
        + b"<iq type='get' id='2'>  <q xmlns='u'>t&amp;x<b/>\xc3\xa9</q></iq>\n"
        + b"<iq type='set' id='declined'></iq ><message><body>hi</body></message>"
        + b"<presence type='subscribed'><x/></presence>"
    )


def test_child_elements():
    assert childElements(
        b" <priority>5<b>x</b>&amp;</priority><c xmlns='urn:c' node='n'/>"
        b"<p:x xmlns:p='urn:p'>t</p:x>",
        "jabber:client",
    ) == [
        ("jabber:client", "priority", {}, "5&"),
        ("urn:c", "c", {"node": "n"}, ""),
        ("urn:p", "x", {}, "t"),
    ]
    assert childElements(b"", "jabber:client") == []
    assert childElements(b"<q:x/>", "jabber:client") is None, "an undeclared prefix"
