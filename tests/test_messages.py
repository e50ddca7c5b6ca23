"""
Messages get mod_client_proxy's answers.
"""

import pytest
from twisted.words.xish import domish
from wokkel.test.helpers import XmlStreamStub

from client_proxy.messages import MessageRefuser

COMPONENT = "proxy.example.org"
TARGET = "service@example.org"


def message(sender, to, type=None):
    element = domish.Element(("jabber:component:accept", "message"))
    element["from"] = sender
    element["to"] = to
    if type:
        element["type"] = type
    element.addElement("body", content="hi")
    return element


@pytest.mark.parametrize(
    "sender, to, condition",
    [
        ("user@example.org/x", COMPONENT, "feature-not-implemented"),
        (TARGET + "/a", COMPONENT, "bad-request"),
        (TARGET + "/a", COMPONENT + "/user@example.org", "feature-not-implemented"),
    ],
)
def test_answers(sender, to, condition):
    stub = XmlStreamStub()
    handler = MessageRefuser(COMPONENT, TARGET)
    handler.makeConnection(stub.xmlstream)
    handler.connectionInitialized()
    stub.send(message(sender, to))
    answer = stub.output.pop()
    assert (answer["type"], answer["to"], answer["from"]) == ("error", sender, to)
    assert condition in answer.toXml()
    stub.send(message(sender, to, "error"))
    assert stub.output == []
