"""
IQ routing, with a stub stream and a fake clock.
"""

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish import domish

from client_proxy.fastpath import FastXmlStream
from client_proxy.inflight import RequestTable
from client_proxy.presence import Resources
from client_proxy.routing import Routing
from client_proxy.router import IQRouter

COMPONENT = "proxy.example.org"
TARGET = "service@example.org"
R1 = TARGET + "/a"
R2 = TARGET + "/b"
USER = "user@example.org/abc"


class FirstStrategy:
    """Always the first online resource but the excluded: deterministic routing."""

    def __init__(self, resources):
        self.resources = resources

    def choose(self, requester, exclude=None):
        return next((r for r in self.resources.online() if r != exclude), None)


HEADER = (
    b"<stream:stream xmlns='jabber:component:accept'"
    b" xmlns:stream='http://etherx.jabber.org/streams' from='proxy.example.org' id='x'>"
)


class Transport(StringTransport):
    """A transport that keeps each write, a stanza, apart."""

    def __init__(self, sent):
        super().__init__()
        self.sent = sent

    def write(self, data):
        self.sent.append(data)


class Stream:
    """
    A real XML stream over a string transport, of the kind the router is
    tested on: the project's fast path (C{FastXmlStream}), or a plain
    Twisted C{XmlStream} as any Wokkel component has. IQs come in as bytes;
    what the router sends is parsed back into elements.
    """

    def __init__(self, fast=True):
        self.fast = fast
        self.sent = []
        self.unhandled = []

    def connect(self, router):
        """A new connection for C{router}, as a reconnect makes."""
        kind = FastXmlStream if self.fast else xmlstream.XmlStream
        self.xmlstream = kind(xmlstream.ConnectAuthenticator(COMPONENT))
        self.xmlstream.makeConnection(Transport(self.sent))
        self.xmlstream.dataReceived(HEADER)
        # Last of all: what no handler took.
        self.xmlstream.addObserver(
            "/iq", lambda el: getattr(el, "handled", False) or self.unhandled.append(el), -10
        )
        self.sent.clear()
        router.makeConnection(self.xmlstream)
        router.connectionInitialized()

    def receive(self, element):
        """Deliver C{element}; return whether the router took it."""
        count = len(self.unhandled)
        self.xmlstream.dataReceived(element.toXml().encode("utf-8"))
        return len(self.unhandled) == count

    @property
    def output(self):
        parsed = []
        stream = domish.elementStream()
        stream.DocumentStartEvent = lambda root: None
        stream.ElementEvent = parsed.append
        stream.DocumentEndEvent = lambda: None
        stream.parse(b"<stream xmlns='jabber:component:accept'>" + b"".join(self.sent))
        return parsed

    def pop(self):
        """The last stanza sent, parsed; it is removed."""
        last = self.output[-1]
        self.sent.pop()
        return last


def iq(type, sender, to, id="1234", payload=True):
    element = domish.Element((None, "iq"))
    element["type"] = type
    element["from"] = sender
    element["to"] = to
    element["id"] = id
    if payload:
        element.addElement(("urn:test", "query"))
    return element


def error_of(element):
    assert element["type"] == "error", element.toXml()
    error = next(e for e in element.elements() if e.name == "error")
    return error["type"], next(error.elements()).name


@pytest.fixture(params=["fast path", "domish"])
def setup(request):
    """
    Every test runs on both paths: one behaviour, whichever stream the
    router is given.
    """
    stub = Stream(fast=request.param == "fast path")
    clock = Clock()
    resources = Resources()
    table = RequestTable(timeout=30, maxPerRequester=3, maxTotal=5, maxPerDomain=5)
    router = IQRouter(
        Routing(COMPONENT, TARGET, resources, FirstStrategy(resources), clock=clock), table, clock
    )
    stub.connect(router)
    return stub, clock, resources, router


def expiries(clock, router):
    """The timers of the router's own, less the summary of its log."""
    return [call for call in clock.getDelayedCalls() if call.func != router.tally.flush]


def test_the_seed_exchange(setup):
    stub, clock, resources, router = setup
    resources.available(R1)
    stub.receive(iq("get", USER, COMPONENT))
    forwarded = stub.pop()
    assert forwarded["from"] == COMPONENT + "/" + USER
    assert forwarded["to"] == R1
    assert forwarded["id"] == "1234"
    assert next(forwarded.elements()).uri == "urn:test"

    stub.receive(iq("result", R1, COMPONENT + "/" + USER, payload=False))
    answer = stub.pop()
    assert (answer["type"], answer["from"], answer["to"], answer["id"]) == (
        "result",
        COMPONENT,
        USER,
        "1234",
    )
    assert len(router.table) == 0


def test_no_resource_online(setup):
    stub, clock, resources, router = setup
    stub.receive(iq("set", USER, COMPONENT))
    answer = stub.pop()
    assert error_of(answer) == ("cancel", "service-unavailable")
    assert (answer["to"], answer["from"]) == (USER, COMPONENT)


def test_requester_that_cannot_be_encoded(setup):
    stub, clock, resources, router = setup
    resources.available(R1)
    long = "user@example.org/" + "x" * 1100
    stub.receive(iq("get", long, COMPONENT))
    assert error_of(stub.pop()) == ("modify", "jid-malformed")


def test_request_to_a_full_jid_is_answered_from_it(setup):
    stub, clock, resources, router = setup
    resources.available(R1)
    stub.receive(iq("get", USER, COMPONENT + "/anything"))
    stub.receive(iq("result", R1, COMPONENT + "/" + USER))
    assert stub.pop()["from"] == COMPONENT + "/anything"


def test_unsolicited_answers_are_dropped(setup):
    stub, clock, resources, router = setup
    resources.available(R1)
    resources.available(R2)
    stub.receive(iq("result", R1, COMPONENT + "/" + USER))
    assert stub.output == []
    stub.receive(iq("get", USER, COMPONENT))
    stub.pop()
    stub.receive(iq("result", R2, COMPONENT + "/" + USER))
    assert stub.output == [], "an answer from another resource"
    stub.receive(iq("result", R1, COMPONENT + "/" + USER))
    assert len(stub.output) == 1
    stub.receive(iq("result", R1, COMPONENT + "/" + USER))
    assert len(stub.output) == 1, "a duplicate answer"


def test_answers_from_others_are_left_to_other_handlers(setup):
    """
    Results and errors from anyone but the target answer the component's
    own requests: the router does not take them.
    """
    stub, clock, resources, router = setup
    assert not stub.receive(iq("result", USER, COMPONENT))
    assert not stub.receive(iq("error", USER, COMPONENT))
    assert stub.output == []


def test_escaping_and_payload_pass_through(setup):
    stub, clock, resources, router = setup
    resources.available(R1)
    awkward = "user@example.org/it's <odd> & \"quoted\""
    request = iq("set", awkward, COMPONENT, id="a'b")
    request.addElement(("urn:other", "data"), content="x < y & z")
    stub.receive(request)
    forwarded = stub.pop()
    assert forwarded["from"] == COMPONENT + "/" + awkward
    assert forwarded["id"] == "a'b"
    assert [(c.uri, c.name, str(c)) for c in forwarded.elements()] == [
        ("urn:test", "query", ""),
        ("urn:other", "data", "x < y & z"),
    ]
    stub.receive(iq("result", R1, COMPONENT + "/" + awkward, id="a'b"))
    assert stub.pop()["to"] == awkward


def test_timeout(setup):
    stub, clock, resources, router = setup
    resources.available(R1)
    stub.receive(iq("get", USER, COMPONENT))
    stub.pop()
    clock.advance(29)
    assert stub.output == []
    clock.advance(1)
    answer = stub.pop()
    assert error_of(answer) == ("wait", "remote-server-timeout")
    assert (answer["to"], answer["from"], answer["id"]) == (USER, COMPONENT, "1234")
    stub.receive(iq("result", R1, COMPONENT + "/" + USER))
    assert stub.output == [], "a late answer is dropped"
    assert expiries(clock, router) == []


def test_limits(setup):
    stub, clock, resources, router = setup
    resources.available(R1)
    for i in range(3):
        stub.receive(iq("get", USER, COMPONENT, id=str(i)))
    stub.sent.clear()
    stub.receive(iq("get", USER, COMPONENT, id="3"))
    assert error_of(stub.pop()) == ("wait", "resource-constraint")
    for i in range(2):
        stub.receive(iq("get", "other@example.org/x", COMPONENT, id=str(i)))
    stub.sent.clear()
    stub.receive(iq("get", "third@example.org/x", COMPONENT))
    assert error_of(stub.pop()) == ("wait", "resource-constraint")


def test_failover_of_a_get(setup):
    stub, clock, resources, router = setup
    resources.available(R1)
    resources.available(R2)
    stub.receive(iq("get", USER, COMPONENT))
    assert stub.pop()["to"] == R1
    resources.unavailable(R1)
    again = stub.pop()
    assert (again["to"], again["from"], again["id"]) == (R2, COMPONENT + "/" + USER, "1234")
    stub.receive(iq("error", R1, COMPONENT + "/" + USER))
    assert stub.output == [], "a bounce from the old resource is dropped"
    stub.receive(iq("result", R2, COMPONENT + "/" + USER))
    assert stub.pop()["type"] == "result"


def test_set_is_not_repeated(setup):
    stub, clock, resources, router = setup
    resources.available(R1)
    resources.available(R2)
    stub.receive(iq("set", USER, COMPONENT))
    stub.pop()
    resources.unavailable(R1)
    assert error_of(stub.pop()) == ("wait", "recipient-unavailable")
    assert stub.output == []


def test_get_with_no_resource_left(setup):
    stub, clock, resources, router = setup
    resources.available(R1)
    stub.receive(iq("get", USER, COMPONENT))
    stub.pop()
    resources.clear()
    assert error_of(stub.pop()) == ("cancel", "service-unavailable")
    assert len(router.table) == 0


def test_graceful_stop_answers_everything(setup):
    stub, clock, resources, router = setup
    resources.available(R1)
    stub.receive(iq("get", USER, COMPONENT, id="1"))
    stub.receive(iq("set", USER, COMPONENT, id="2"))
    stub.sent.clear()
    assert router.answerAllWithError("recipient-unavailable", "wait", "stop") == 2
    assert sorted(a["id"] for a in stub.output) == ["1", "2"]
    assert expiries(clock, router) == []


def reconnect(router, stub):
    router.connectionLost(None)
    stub.connect(router)


def test_an_answer_on_the_next_connection_is_forwarded(setup):
    """A reconnect loses no request: the table outlives the stream."""
    stub, clock, resources, router = setup
    resources.available(R1)
    stub.receive(iq("get", USER, COMPONENT))
    stub.sent.clear()
    reconnect(router, stub)
    assert len(router.table) == 1
    stub.receive(iq("result", R1, COMPONENT + "/" + USER, payload=False))
    answer = stub.pop()
    assert (answer["type"], answer["to"], answer["id"]) == ("result", USER, "1234")
    assert len(router.table) == 0


def test_expired_while_disconnected_answered_on_the_next_connection(setup):
    stub, clock, resources, router = setup
    resources.available(R1)
    stub.receive(iq("set", USER, COMPONENT))
    stub.sent.clear()
    router.connectionLost(None)
    clock.advance(31)
    assert stub.sent == [] and len(router.table) == 0
    stub.connect(router)
    answer = stub.pop()
    assert error_of(answer) == ("wait", "remote-server-timeout")
    assert (answer["to"], answer["id"]) == (USER, "1234")
    reconnect(router, stub)
    assert stub.sent == []  # sent once only


def test_request_from_the_target_to_the_bare_component(setup):
    stub, clock, resources, router = setup
    stub.receive(iq("get", R1, COMPONENT))
    assert error_of(stub.pop()) == ("cancel", "bad-request")


def test_outbound_request_and_answer(setup):
    stub, clock, resources, router = setup
    resources.available(R1)
    resources.available(R2)
    stub.receive(iq("get", R1, COMPONENT + "/" + USER, id="same"))
    stub.receive(iq("get", R2, COMPONENT + "/" + USER, id="same"))
    first, second = stub.output
    assert (first["from"], first["to"]) == (COMPONENT, USER)
    assert first["id"] != second["id"], "the component's own ids on the way out"
    assert next(first.elements()).uri == "urn:test"
    stub.sent.clear()
    stub.receive(iq("result", USER, COMPONENT, id=second["id"]))
    stub.receive(iq("result", USER, COMPONENT, id=first["id"]))
    to_second, to_first = stub.output
    assert (to_first["to"], to_first["from"], to_first["id"]) == (
        R1,
        COMPONENT + "/" + USER,
        "same",
    )
    assert to_second["to"] == R2
    stub.sent.clear()
    assert stub.receive(iq("result", USER, COMPONENT, id=first["id"])), "a duplicate"
    assert stub.output == []


def test_outbound_answer_from_someone_else_is_dropped(setup):
    stub, clock, resources, router = setup
    stub.receive(iq("set", R1, COMPONENT + "/" + USER))
    alias = stub.pop()["id"]
    assert stub.receive(iq("result", "evil@example.org/x", COMPONENT, id=alias))
    assert stub.output == []
    stub.receive(iq("error", USER, COMPONENT, id=alias))
    assert stub.pop()["type"] == "error"


def test_outbound_to_a_bare_jid_answered_by_a_full_jid(setup):
    stub, clock, resources, router = setup
    stub.receive(iq("get", R1, COMPONENT + "/user@example.org"))
    alias = stub.pop()["id"]
    stub.receive(iq("result", "user@example.org/phone", COMPONENT, id=alias))
    assert stub.pop()["to"] == R1


def test_outbound_timeout(setup):
    stub, clock, resources, router = setup
    stub.receive(iq("get", R1, COMPONENT + "/" + USER, id="mine"))
    alias = stub.pop()["id"]
    clock.advance(30)
    answer = stub.pop()
    assert error_of(answer) == ("wait", "remote-server-timeout")
    assert (answer["to"], answer["from"], answer["id"]) == (R1, COMPONENT + "/" + USER, "mine")
    stub.receive(iq("result", USER, COMPONENT, id=alias))
    assert stub.output == [], "a late answer"


@pytest.mark.parametrize("to", [COMPONENT + "/" + COMPONENT, COMPONENT + "/bad jid@"])
def test_outbound_to_nowhere(setup, to):
    stub, clock, resources, router = setup
    stub.receive(iq("get", R1, to))
    assert error_of(stub.pop()) == ("modify", "jid-malformed")


class RecordingMetrics:
    def __init__(self):
        self.events = []

    def __getattr__(self, name):
        return lambda *args: self.events.append((name,) + args)


def test_metrics(setup):
    stub, clock, resources, router = setup
    metrics = router.metrics = RecordingMetrics()
    stub.receive(iq("get", USER, COMPONENT))
    resources.available(R1)
    resources.available(R2)
    stub.receive(iq("get", USER, COMPONENT, id="2"))
    clock.advance(0.5)
    error = iq("error", R1, COMPONENT + "/" + USER, id="2", payload=False)
    condition = error.addElement("error")
    condition["type"] = "cancel"
    condition.addElement(("urn:ietf:params:xml:ns:xmpp-stanzas", "item-not-found"))
    stub.receive(error)
    stub.receive(iq("result", R1, COMPONENT + "/" + USER, id="2"))
    stub.receive(iq("get", USER, COMPONENT, id="3"))
    resources.unavailable(R1)
    clock.advance(30)
    assert metrics.events == [
        ("requestReceived",),
        ("requestRefused", "no_resource"),
        ("answerSent", "error", "service-unavailable"),
        ("requestReceived",),
        ("requestForwarded",),
        ("answerTime", 0.5),
        ("answerSent", "error", "item-not-found"),
        ("stanzaDropped", "unsolicited"),
        ("requestReceived",),
        ("requestForwarded",),
        ("requestRetried",),
        ("requestTimedOut",),
        ("answerSent", "error", "remote-server-timeout"),
    ]


def test_outbound_to_an_address_stringprep_cannot_read(setup):
    stub, clock, resources, router = setup
    stub.receive(iq("get", R1, COMPONENT + "/alice@a..b"))
    assert error_of(stub.pop()) == ("modify", "jid-malformed")


def test_a_bug_costs_an_error_answer_not_the_connection(setup):
    stub, clock, resources, router = setup
    resources.available(R1)

    def broken(requester):
        raise RuntimeError("a bug")

    router.strategy.choose = broken
    assert stub.receive(iq("get", USER, COMPONENT))
    assert error_of(stub.pop()) == ("cancel", "internal-server-error")


def test_no_resource_to_choose(setup):
    """
    A strategy may find no resource to choose among those online (none
    eligible, say): the request gets service-unavailable.
    """
    stub, clock, resources, router = setup
    resources.available(R1)
    router.strategy.choose = lambda requester, exclude=None: None
    stub.receive(iq("get", USER, COMPONENT, id="none"))
    answer = stub.pop()
    assert error_of(answer) == ("cancel", "service-unavailable")
    assert (answer["to"], answer["from"], answer["id"]) == (USER, COMPONENT, "none")
    assert len(router.table) == 0


def test_all_resources_leaving_at_once_sends_nothing_again(setup):
    stub, clock, resources, router = setup
    for name in "abc":
        resources.available(TARGET + "/" + name)
    stub.receive(iq("get", USER, COMPONENT))
    stub.sent.clear()
    resources.clear()
    [answer] = stub.output
    assert error_of(answer) == ("cancel", "service-unavailable")


def bounce(sender, to, id="1234", condition="service-unavailable", payload=False):
    element = iq("error", sender, to, id=id, payload=payload)
    error = element.addElement("error")
    error["type"] = "cancel"
    error.addElement(("urn:ietf:params:xml:ns:xmpp-stanzas", condition))
    return element


def ejabberd_bounce(sender, to):
    """ejabberd's bounce: the request's payload, then the error with a text."""
    element = bounce(sender, to, payload=True)
    error = next(e for e in element.elements() if e.name == "error")
    error.addElement(("urn:ietf:params:xml:ns:xmpp-stanzas", "text"), content="User session not found")
    return element


def test_ejabberds_bounce_sends_a_get_elsewhere(setup):
    stub, clock, resources, router = setup
    resources.available(R1)
    resources.available(R2)
    stub.receive(iq("get", USER, COMPONENT))
    assert stub.pop()["to"] == R1
    stub.receive(ejabberd_bounce(R1, COMPONENT + "/" + USER))
    assert stub.pop()["to"] == R2


def test_the_condition_is_the_errors_not_the_echoed_payloads(setup):
    """A requester's payload cannot make up the condition counted."""
    stub, clock, resources, router = setup
    metrics = router.metrics = RecordingMetrics()
    resources.available(R1)
    request = iq("get", USER, COMPONENT)
    next(request.elements()).addElement(
        ("urn:ietf:params:xml:ns:xmpp-stanzas", "service-unavailable")
    )
    stub.receive(request)
    answer = bounce(R1, COMPONENT + "/" + USER, condition="item-not-found")
    answer.children.insert(0, next(request.elements()))
    stub.receive(answer)
    assert ("answerSent", "error", "item-not-found") in metrics.events
    assert error_of(stub.pop()) == ("cancel", "item-not-found")


def test_a_bounce_sends_a_get_elsewhere_once(setup):
    """
    The server bounced the get (its resource left, and the component has
    not heard yet): another resource gets it; a second bounce is forwarded.
    """
    stub, clock, resources, router = setup
    resources.available(R1)
    resources.available(R2)
    stub.receive(iq("get", USER, COMPONENT))
    assert stub.pop()["to"] == R1
    stub.receive(bounce(R1, COMPONENT + "/" + USER))
    again = stub.pop()
    assert (again["to"], again["type"]) == (R2, "get")
    assert stub.output == []
    stub.receive(bounce(R2, COMPONENT + "/" + USER))
    assert error_of(stub.pop()) == ("cancel", "service-unavailable")
    assert len(router.table) == 0


@pytest.mark.parametrize(
    "request_type, answer",
    [
        ("set", bounce(R1, COMPONENT + "/" + USER)),
        ("get", bounce(R1, COMPONENT + "/" + USER, condition="item-not-found")),
    ],
)
def test_other_errors_are_answers(setup, request_type, answer):
    stub, clock, resources, router = setup
    resources.available(R1)
    resources.available(R2)
    stub.receive(iq(request_type, USER, COMPONENT))
    stub.sent.clear()
    stub.receive(answer)
    [forwarded] = stub.output
    assert (forwarded["type"], forwarded["to"]) == ("error", USER)
