"""
The target's resources and the presence handler, with a stub stream.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel.test.helpers import XmlStreamStub
from zope.interface import implementer

from client_proxy.caps import Caps
from client_proxy.fastpath import FastXmlStream
from client_proxy.presence import IResourceIndex, Resources, TargetPresenceHandler

COMPONENT = "proxy.example.org"
TARGET = "service@example.org"


class Recorder:
    def __init__(self):
        self.events = []

    def resourceOnline(self, resource):
        self.events.append(("online", resource))

    def resourceOffline(self, resource):
        self.events.append(("offline", resource))


@implementer(IResourceIndex)
class IndexRecorder(Recorder):
    """An index: told of priorities and of the set being forgotten too."""

    def priorityChanged(self, resource):
        self.events.append(("priority", resource))

    def forgotten(self):
        self.events.append(("forgotten",))


def presence(sender, type=None, priority=None, to=COMPONENT):
    element = domish.Element(("jabber:component:accept", "presence"))
    element["from"] = sender
    element["to"] = to
    if type:
        element["type"] = type
    if priority is not None:
        element.addElement("priority", content=str(priority))
    return element


class FastStreamStub:
    """
    Like Wokkel's L{XmlStreamStub}, on the fast path: what is sent to it
    reaches a L{FastXmlStream} as bytes, after a stream header.
    """

    def __init__(self):
        self.output = []
        self.xmlstream = FastXmlStream(xmlstream.ConnectAuthenticator(COMPONENT))
        self.xmlstream.makeConnection(StringTransport())
        self.xmlstream.dataReceived(
            b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'"
            b" xmlns='jabber:component:accept' from='proxy.example.org' id='x'>"
        )
        self.xmlstream.send = self.output.append
        self.dispatched = []
        self.xmlstream.addObserver("/presence", self.dispatched.append, 100)

    def send(self, element):
        self.xmlstream.dataReceived(element.toXml().encode("utf-8"))


@pytest.fixture(params=["elements", "bytes"])
def setup(request):
    """
    The handler on a stream that dispatches elements, and on the fast
    path, which hands it presence as bytes: every test below holds for both.
    """
    stub = XmlStreamStub() if request.param == "elements" else FastStreamStub()
    resources = Resources()
    recorder = Recorder()
    resources.addObserver(recorder)
    handler = TargetPresenceHandler(JID(COMPONENT), JID(TARGET), resources, Clock())
    handler.parent = stub.xmlstream  # what the stream manager's send reaches
    handler.makeConnection(stub.xmlstream)
    handler.connectionInitialized()
    return stub, resources, recorder, handler


def sent(stub, type):
    return [s for s in stub.output if s.name == "presence" and s.getAttribute("type") == type]


def test_resources_state():
    resources = Resources()
    recorder, index = Recorder(), IndexRecorder()
    resources.addObserver(recorder)
    resources.addObserver(index)
    resources.available("s@x/a", 5)
    resources.available("s@x/b", -1)
    resources.available("s@x/a", 7)
    resources.available("s@x/a", 7)
    assert list(resources.online()) == ["s@x/a", "s@x/b"]
    assert resources.priority("s@x/a") == 7
    resources.unavailable("s@x/a")
    resources.unavailable("s@x/unknown")
    assert list(resources.online()) == ["s@x/b"]
    resources.clear()
    assert len(resources) == 0
    resources.available("s@x/c")
    resources.forget()
    assert len(resources) == 0
    assert recorder.events == [
        ("online", "s@x/a"),
        ("online", "s@x/b"),
        ("offline", "s@x/a"),
        ("offline", "s@x/b"),
        ("online", "s@x/c"),
    ]
    assert index.events == [
        ("online", "s@x/a"),
        ("online", "s@x/b"),
        ("priority", "s@x/a"),
        ("offline", "s@x/a"),
        ("forgotten",),
        ("online", "s@x/c"),
        ("forgotten",),
    ]


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("available"), st.sampled_from("abcd"), st.integers(-2, 2)),
            st.tuples(st.just("unavailable"), st.sampled_from("abcde")),
            st.tuples(st.just("clear")),
        )
    )
)
def test_resources_tell_their_indexes_everything(changes):
    """
    An index that follows the events holds the same resources and
    priorities as the set, in the same order.
    """
    resources = Resources()
    index = IndexRecorder()
    resources.addObserver(index)
    for change in changes:
        getattr(resources, change[0])(*change[1:])
    model = {}
    for event, *resource in index.events:
        if event == "online":
            model[resource[0]] = None
        elif event == "offline":
            del model[resource[0]]
        elif event == "forgotten":
            model.clear()
        else:
            assert resource[0] in model, "a priority changed outside the set"
    assert list(model) == list(resources.online())


def test_subscribes_on_every_authenticated_stream(setup):
    stub, resources, recorder, handler = setup
    request = stub.output.pop()
    assert (request.name, request["type"], request["to"], request["from"]) == (
        "presence",
        "subscribe",
        TARGET,
        COMPONENT,
    )


def test_probes_only_once_subscribed(setup):
    stub, resources, recorder, handler = setup
    stub.output.clear()
    stub.send(presence(TARGET, "subscribed"))
    probe = stub.output.pop()
    assert (probe["type"], probe["to"], probe["from"]) == ("probe", TARGET, COMPONENT)


def test_probes_once_per_change_of_the_subscription(setup):
    """
    Every resource of a fleet approving brings a C{subscribed}: one probe
    for all of them, and one more only after the subscription was lost.
    """
    stub, resources, recorder, handler = setup
    for _ in range(20):
        stub.send(presence(TARGET, "subscribed"))
    assert len(sent(stub, "probe")) == 1
    stub.send(presence(TARGET, "unsubscribed"))
    stub.send(presence(TARGET, "subscribed"))
    stub.send(presence(TARGET, "subscribed"))
    assert len(sent(stub, "probe")) == 2
    handler.connectionLost(None)
    handler.makeConnection(stub.xmlstream)
    handler.connectionInitialized()
    stub.send(presence(TARGET, "subscribed"))
    assert len(sent(stub, "probe")) == 3, "a new stream, asked again"


def test_tracks_available_and_unavailable(setup):
    stub, resources, recorder, handler = setup
    stub.send(presence(TARGET + "/a", priority=3))
    stub.send(presence(TARGET + "/b"))
    assert list(resources.online()) == [TARGET + "/a", TARGET + "/b"]
    assert resources.priority(TARGET + "/a") == 3
    stub.send(presence(TARGET + "/a", "unavailable"))
    assert list(resources.online()) == [TARGET + "/b"]


@pytest.mark.parametrize("text, expected", [("-5", -5), (" 12 ", 12), ("high", 0), ("", 0)])
def test_priority(setup, text, expected):
    """
    RFC 6121, 4.7.2.3: an integer; what is not one counts as 0.
    """
    stub, resources, recorder, handler = setup
    element = presence(TARGET + "/a")
    element.addElement("priority", content=text)
    stub.send(element)
    assert resources.priority(TARGET + "/a") == expected


def test_the_fast_path_takes_the_targets_available_and_unavailable_presence():
    """
    On the fast path, the target's available and unavailable presence is
    read from the bytes; everything else reaches the stream's observers
    as elements, in order.
    """
    stub = FastStreamStub()
    resources = Resources()
    handler = TargetPresenceHandler(JID(COMPONENT), JID(TARGET), resources, Clock())
    handler.parent = stub.xmlstream
    handler.makeConnection(stub.xmlstream)
    handler.connectionInitialized()
    for element in (
        presence(TARGET + "/a", priority=3),
        presence("user@example.org/x"),
        presence(TARGET + "/b"),
        presence(TARGET, "subscribed"),
        presence(TARGET + "/b", "unavailable"),
        presence(TARGET + "/c", "error"),
    ):
        stub.send(element)
    assert [(e.getAttribute("from"), e.getAttribute("type")) for e in stub.dispatched] == [
        ("user@example.org/x", None),
        (TARGET, "subscribed"),
        (TARGET + "/c", "error"),
    ]


_children = st.lists(
    st.sampled_from(
        [
            "<priority>%s</priority>",
            "<priority xmlns='jabber:client'>%s</priority>",
            "<status>%s</status>",
            "<x xmlns='urn:x'><priority>9</priority></x>",
            "<p:priority xmlns:p='urn:p'>%s</p:priority>",
            "<priority>%s<!-- c --></priority>",
            "<priority><![CDATA[%s]]></priority>",
            "<show>%s</show>",
            "<show xmlns='urn:x'>away</show>",
            "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='%s'/>",
            "<c xmlns='http://jabber.org/protocol/caps' node='n' ver='%s'/>",
            " ",
        ]
    ),
    max_size=4,
)


@given(_children, st.sampled_from(["3", " -7 ", "x", "", "12&#x33;"]), st.booleans())
def test_bytes_and_elements_say_the_same(children, text, clientNamespace):
    """
    The fast path reads a presence's priority, show and caps as the
    element path does, whatever the other children, the stanza's
    namespace, or how the text is written.
    """
    declaration = " xmlns='jabber:client'" if clientNamespace else ""
    inner = "".join(child.replace("%s", text) for child in children)
    stanza = "<presence%s from='%s/a'>%s</presence>" % (declaration, TARGET, inner)
    read = []
    for stub in (XmlStreamStub(), FastStreamStub()):
        resources = Resources()
        handler = TargetPresenceHandler(JID(COMPONENT), JID(TARGET), resources, Clock())
        handler.parent = stub.xmlstream
        handler.makeConnection(stub.xmlstream)
        handler.connectionInitialized()
        if isinstance(stub, FastStreamStub):
            stub.xmlstream.dataReceived(stanza.encode("utf-8"))
            assert stub.dispatched == []
        else:
            stub.send(parseStanza(stanza))
        resource = TARGET + "/a"
        read.append(
            (resources.priority(resource), resources.show(resource), resources.caps(resource))
        )
    assert read[0] == read[1]


def parseStanza(text):
    """
    A stanza as Twisted's element parser builds it in a component stream.
    """
    stream = domish.elementStream()
    stanzas = []
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = stanzas.append
    stream.DocumentEndEvent = lambda: None
    stream.parse(b"<s xmlns='jabber:component:accept'>" + text.encode("utf-8"))
    return stanzas[0]


def test_show_and_caps(setup):
    """
    The show (RFC 6121, 4.7.2.1) and the entity capabilities (XEP-0115) of
    each resource are read from its presence; caps without a hash (the
    legacy format) count as none.
    """
    stub, resources, recorder, handler = setup
    element = presence(TARGET + "/a")
    element.addElement("show", content=" xa ")
    c = element.addElement(("http://jabber.org/protocol/caps", "c"))
    c["hash"], c["node"], c["ver"] = "sha-1", "https://example.org/w", "abc="
    stub.send(element)
    assert resources.show(TARGET + "/a") == "xa"
    assert resources.caps(TARGET + "/a") == Caps("sha-1", "https://example.org/w", "abc=")
    del c["hash"]
    stub.send(element)
    assert resources.caps(TARGET + "/a") is None
    stub.send(presence(TARGET + "/a"))
    assert resources.show(TARGET + "/a") is None
    assert recorder.events == [("online", TARGET + "/a")]


def test_repeated_presence_changes_nothing(setup):
    """
    The server repeats every resource's presence after each approval: a
    resource already known is neither announced nor logged again.
    """
    stub, resources, recorder, handler = setup
    logged = []
    handler.log = type(handler.log)(observer=logged.append)
    for _ in range(3):
        stub.send(presence(TARGET + "/a", priority=1))
    assert recorder.events == [("online", TARGET + "/a")]
    assert len(logged) == 1


def test_available_presence_from_the_bare_jid_is_not_a_resource(setup):
    stub, resources, recorder, handler = setup
    stub.send(presence(TARGET))
    assert list(resources.online()) == []


@pytest.mark.parametrize(
    "sender, type", [(TARGET, "error"), (TARGET + "/a", "error"), (TARGET, "unsubscribed")]
)
def test_clears_everything(setup, sender, type):
    stub, resources, recorder, handler = setup
    stub.send(presence(TARGET + "/a"))
    stub.send(presence(TARGET + "/b"))
    stub.send(presence(sender, type))
    assert list(resources.online()) == []


def test_connection_lost_forgets_silently(setup):
    stub, resources, recorder, handler = setup
    stub.send(presence(TARGET + "/a"))
    handler.connectionLost(None)
    assert list(resources.online()) == []
    assert recorder.events == [("online", TARGET + "/a")]


@pytest.mark.parametrize(
    "type", [None, "unavailable", "subscribe", "subscribed", "unsubscribed", "probe", "error"]
)
def test_presence_from_others(setup, type):
    """
    Presence from anyone but the target is not this handler's: it is
    ignored here, never answered with an error, and never tracked.
    """
    stub, resources, recorder, handler = setup
    stub.output.clear()
    stub.send(presence("user@example.org/x", type))
    assert stub.output == []
    assert list(resources.online()) == []


def test_asks_again_after_a_refusal_waiting_longer_each_time(setup):
    stub, resources, recorder, handler = setup
    clock = handler.clock
    stub.output.clear()
    for delay in (60, 120, 240):
        stub.send(presence(TARGET, "unsubscribed"))
        clock.advance(delay - 1)
        assert sent(stub, "subscribe") == []
        clock.advance(1)
        assert len(sent(stub, "subscribe")) == 1
        stub.output.clear()
    stub.send(presence(TARGET, "subscribed"))
    stub.send(presence(TARGET, "unsubscribed"))
    clock.advance(60)
    assert len(sent(stub, "subscribe")) == 1, "approval resets the wait"


def test_target_asking_for_our_presence(setup):
    stub, resources, recorder, handler = setup
    stub.send(presence(TARGET, "unsubscribed"))
    stub.output.clear()
    stub.send(presence(TARGET + "/a", "subscribe"))
    assert [s["to"] for s in sent(stub, "subscribed")] == [TARGET]
    assert len(sent(stub, "subscribe")) == 1, "asked again at once"
    assert not handler.clock.getDelayedCalls(), "the later request is cancelled"
    stub.send(presence(TARGET, "subscribed"))
    stub.output.clear()
    stub.send(presence(TARGET + "/a", "subscribe"))
    assert sent(stub, "subscribe") == []
