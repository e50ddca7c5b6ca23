"""
Beyond mod_client_proxy, end to end: requests from the implementing client,
and messages both ways.
"""

from xml.sax.saxutils import quoteattr

from harness.xmpp import Responder, error_condition, tag
from tests.conftest import COMPONENT, asking, online, user


def test_request_from_the_implementing_client(prosody, target, clients, proxy):
    a = clients(user(target), "a", Responder)
    b = clients(user(target), "b", Responder)
    p = proxy(target)
    online(p, a.jid)
    online(p, b.jid)
    someone = clients("someone", "phone")
    to = COMPONENT + "/" + someone.jid
    for service in (a, b):
        service.send(
            "<iq type='get' id='same' to=%s><q xmlns='urn:test:out'/></iq>" % quoteattr(to)
        )
    seen = []
    for _ in range(2):
        request = someone.wait_for(lambda s: tag(s) == "iq" and s.get("type") == "get")
        assert request.get("from") == COMPONENT
        assert request.find("{urn:test:out}q") is not None
        seen.append(request.get("id"))
        someone.send(
            "<iq type='result' id=%s to=%s/>" % (quoteattr(request.get("id")), quoteattr(COMPONENT))
        )
    assert len(set(seen)) == 2, "two resources, one id: the component's own ids"
    for service in (a, b):
        answer = service.wait_for(lambda s: s.get("id") == "same")
        assert (answer.get("type"), answer.get("from")) == ("result", to)


def test_request_from_the_implementing_client_times_out(prosody, target, clients, proxy):
    a = clients(user(target), "a", Responder)
    p = proxy(target, "--timeout", "1")
    online(p, a.jid)
    silent = clients("silent", "x")
    a.send("<iq type='set' id='t' to=%s><q xmlns='urn:test'/></iq>"
           % quoteattr(COMPONENT + "/" + silent.jid))
    answer = a.wait_for(lambda s: s.get("id") == "t", timeout=5)
    assert error_condition(answer) == "remote-server-timeout"


def test_messages_both_ways(prosody, target, clients, proxy):
    a = clients(user(target), "a", Responder)
    p = proxy(target)
    online(p, a.jid)
    someone = clients("someone", "desk")
    someone.send("<message to=%s type='chat' id='m1'><body>hello</body></message>"
                 % quoteattr(COMPONENT))
    got = a.wait_for(lambda s: tag(s) == "message")
    assert (got.get("from"), got.get("type")) == (COMPONENT + "/" + someone.jid, "chat")
    assert got.findtext("{jabber:client}body") == "hello"
    a.send("<message to=%s type='chat' id='m2'><body>hi back</body></message>"
           % quoteattr(got.get("from")))
    reply = someone.wait_for(lambda s: tag(s) == "message")
    assert (reply.get("from"), reply.findtext("{jabber:client}body")) == (COMPONENT, "hi back")


def test_message_with_no_resource_online(prosody, target, clients, proxy):
    p = proxy(target)
    asking(p, target)
    someone = clients("someone", "alone")
    someone.send("<message to=%s id='m1'><body>anyone?</body></message>" % quoteattr(COMPONENT))
    answer = someone.wait_for(lambda s: s.get("id") == "m1")
    assert error_condition(answer) == "service-unavailable"
