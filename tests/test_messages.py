"""
Messages through the component.
"""

import pytest
from twisted.internet.task import Clock
from twisted.words.xish import domish
from wokkel.test.helpers import XmlStreamStub

from client_proxy.access import AccessPolicy
from client_proxy.features import fleetDispatch
from client_proxy.inflight import RequestTable
from client_proxy.messages import MessageRouter
from client_proxy.presence import Resources
from client_proxy.routing import Routing
from tests.test_router import FirstStrategy

COMPONENT = "proxy.example.org"
TARGET = "service@example.org"
USER = "user@example.org/x"


def message(sender, to, type=None):
    element = domish.Element(("jabber:component:accept", "message"))
    element["from"] = sender
    element["to"] = to
    if type:
        element["type"] = type
    element.addElement("body", content="hi")
    return element


def parse(data):
    parsed = []
    stream = domish.elementStream()
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = parsed.append
    stream.parse(b"<stream xmlns='jabber:component:accept'>" + data)
    return parsed[0]


@pytest.fixture
def setup(request):
    """A message router; a test may mark its Routing settings (routing=...)."""
    marker = request.node.get_closest_marker("routing")
    settings = marker.kwargs if marker else {}
    stub = XmlStreamStub()
    resources = Resources()
    handler = MessageRouter(
        Routing(COMPONENT, TARGET, resources, FirstStrategy(resources), clock=Clock(), **settings)
    )
    handler.makeConnection(stub.xmlstream)
    # The router writes stanzas as bytes; the tests read them as elements.
    stub.xmlstream.send = lambda data: stub.output.append(parse(data))
    handler.connectionInitialized()
    return stub, resources


@pytest.mark.parametrize("to", [COMPONENT, COMPONENT + "/anything"])
@pytest.mark.parametrize("type", [None, "chat", "headline", "error"])
def test_user_to_a_resource(setup, to, type):
    stub, resources = setup
    resources.available(TARGET + "/a")
    stub.send(message(USER, to, type))
    sent = stub.output.pop()
    assert (sent["from"], sent["to"], sent.getAttribute("type")) == (
        COMPONENT + "/" + USER,
        TARGET + "/a",
        type,
    )
    assert str(sent.body) == "hi"


def test_no_resource_online(setup):
    stub, resources = setup
    stub.send(message(USER, COMPONENT, "chat"))
    answer = stub.output.pop()
    assert (answer["type"], answer["to"], answer["from"]) == ("error", USER, COMPONENT)
    assert "service-unavailable" in answer.toXml()
    stub.send(message(USER, COMPONENT, "error"))
    assert stub.output == [], "errors are never answered"


def test_a_draining_resource_gets_no_message():
    stub = XmlStreamStub()
    resources = Resources()
    strategy = fleetDispatch(resources, RequestTable(30, 10, 10), "round-robin").strategy
    handler = MessageRouter(Routing(COMPONENT, TARGET, resources, strategy, clock=Clock()))
    handler.makeConnection(stub.xmlstream)
    stub.xmlstream.send = lambda data: stub.output.append(parse(data))
    handler.connectionInitialized()
    resources.available(TARGET + "/a", show="xa")
    stub.send(message(USER, COMPONENT, "chat"))
    answer = stub.output.pop()
    assert answer["type"] == "error" and "service-unavailable" in answer.toXml()
    resources.available(TARGET + "/b")
    for _ in range(3):
        stub.send(message(USER, COMPONENT, "chat"))
        assert stub.output.pop()["to"] == TARGET + "/b"


def test_target_to_a_user(setup):
    stub, resources = setup
    stub.send(message(TARGET + "/a", COMPONENT + "/" + USER, "chat"))
    sent = stub.output.pop()
    assert (sent["from"], sent["to"], sent["type"]) == (COMPONENT, USER, "chat")


@pytest.mark.parametrize(
    "to, condition",
    [
        (COMPONENT, "bad-request"),
        (COMPONENT + "/" + COMPONENT, "jid-malformed"),
        (COMPONENT + "/not a jid@", "jid-malformed"),
    ],
)
def test_target_to_nowhere(setup, to, condition):
    stub, resources = setup
    stub.send(message(TARGET + "/a", to))
    answer = stub.output.pop()
    assert answer["type"] == "error" and condition in answer.toXml()
    stub.send(message(TARGET + "/a", to, "error"))
    assert stub.output == []


@pytest.mark.routing(access=AccessPolicy(TARGET, deny=["example.org"]))
def test_a_denied_sender_is_forbidden(setup):
    stub, resources = setup
    resources.available(TARGET + "/a")
    stub.send(message(USER, COMPONENT, "chat"))
    answer = stub.output.pop()
    assert answer["type"] == "error" and "forbidden" in answer.toXml()
    assert stub.output == [], "nothing reached the target"
    stub.send(message(TARGET + "/a", COMPONENT + "/" + USER, "chat"))
    assert stub.output.pop()["to"] == USER, "the target is always allowed"


@pytest.mark.routing(maxStanzaSize=4096)
def test_a_message_too_large_to_send_on(setup):
    """
    The sender hears ``policy-violation``, in an error that does not
    repeat the message (it would be too large again).
    """
    stub, resources = setup
    resources.available(TARGET + "/a")
    big = message(USER, COMPONENT, "chat")
    big.body.children = ["x" * 5000]
    stub.send(big)
    [answer] = stub.output
    assert (answer["type"], answer["to"], answer["from"]) == ("error", USER, COMPONENT)
    assert "policy-violation" in answer.toXml() and "xxx" not in answer.toXml()


def test_a_message_a_handler_of_the_components_own_took_is_left_alone(setup):
    """Beside other handlers, the router takes what they leave."""
    stub, resources = setup
    resources.available(TARGET + "/a")

    def own(message):
        if message.body is not None and str(message.body) == "mine":
            message.handled = True

    stub.xmlstream.addObserver("/message", own)
    stub.send(message(USER, COMPONENT, "chat"))
    mine = message(USER, COMPONENT, "chat")
    mine.body.children = ["mine"]
    stub.send(mine)
    assert [str(m.body) for m in stub.output] == ["hi"]
