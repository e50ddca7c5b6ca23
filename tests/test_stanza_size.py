"""
No stanza ends the component's stream, whoever wrote it: against a real
Prosody, which writes each quote in text as six bytes and closes a
component stream past 512 KiB.
"""

from xml.sax.saxutils import quoteattr

from harness.xmpp import Responder, error_condition, error_type
from tests.conftest import COMPONENT, online, user
from tests.test_reliability import wait_until

#: 200,000 quotes: under the 256 KiB a client stream takes, but 1.2 MB
#: once Prosody has written them as &quot; and &apos;.
QUOTES = "\"'" * 100_000


def query(text=""):
    return "<query xmlns='urn:test'>%s</query>" % (text,)


def send(client, id, to=COMPONENT, payload=query(), type="get"):
    client.send(
        "<iq type=%s id=%s to=%s>%s</iq>" % (quoteattr(type), quoteattr(id), quoteattr(to), payload)
    )


def answer_to(client, id, timeout=10.0):
    return client.wait_for(lambda s: s.get("id") == id, timeout)


def request_with_id(service, id):
    wait_until(lambda: any(r.get("id") == id for r in service.requests), what="request " + id)
    return next(r for r in service.requests if r.get("id") == id)


def test_quotes_pass_both_ways_and_others_are_still_served(prosody, target, clients, proxy):
    """
    A request of 200,000 quotes and its answer of as many reach their
    recipients, written compactly, and the request another user has in
    flight meanwhile is answered: the stream held.
    """
    service = clients(user(target), "a", Responder, answer=False)
    p = proxy(target)
    online(p, service.jid)
    innocent, heavy = clients("innocent", "r"), clients("heavy", "r")
    send(innocent, "waiting")
    waiting = request_with_id(service, "waiting")
    send(heavy, "quotes", payload=query(QUOTES))
    quotes = request_with_id(service, "quotes")
    assert quotes.find("{urn:test}query").text == QUOTES
    send(service, "quotes", to=quotes.get("from"), type="result", payload=query(QUOTES))
    reply = answer_to(heavy, "quotes")
    assert reply.get("type") == "result"
    assert reply.find("{urn:test}query").text == QUOTES
    send(service, "waiting", to=waiting.get("from"), type="result")
    assert answer_to(innocent, "waiting").get("type") == "result"
    assert "Disconnected" not in p.log()


def test_a_request_too_large_to_forward(prosody, target, clients, proxy):
    service = clients(user(target), "a", Responder)
    p = proxy(target, "--max-stanza-size", "100000")
    online(p, service.jid)
    requester = clients("heavy", "r")
    send(requester, "big", payload=query("x" * 150_000))
    reply = answer_to(requester, "big")
    assert (error_type(reply), error_condition(reply)) == ("modify", "policy-violation")
    send(requester, "small")
    assert answer_to(requester, "small").get("type") == "result"
    assert [r.get("id") for r in service.requests] == ["small"]


def test_an_answer_too_large_to_send_back(prosody, target, clients, proxy):
    """
    The requester gets an error instead, and nothing else: the oversized
    answer is dropped.
    """
    service = clients(user(target), "a", Responder, answer=False)
    p = proxy(target, "--max-stanza-size", "100000")
    online(p, service.jid)
    requester = clients("curious", "r")
    send(requester, "q")
    request = request_with_id(service, "q")
    send(service, "q", to=request.get("from"), type="result", payload=query("x" * 150_000))
    reply = answer_to(requester, "q")
    assert (error_type(reply), error_condition(reply)) == ("modify", "policy-violation")
    # A barrier: a later exchange completes, and nothing else came before.
    send(requester, "later")
    later = request_with_id(service, "later")
    send(service, "later", to=later.get("from"), type="result")
    assert answer_to(requester, "later").get("type") == "result"
    assert [s.get("id") for s in requester.received() if s.tag.endswith("iq")] == []
