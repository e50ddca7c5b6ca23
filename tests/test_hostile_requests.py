"""
A hostile domain against a real Prosody: it forges users and resources at
will (a component connection of its own, L{tests.support.hostile}), while
real client connections stand for everyone else.
"""

from xml.sax.saxutils import quoteattr

from harness.proxy import Logged
from harness.xmpp import Responder, error_condition, error_type, tag
from tests.conftest import COMPONENT, online, user
from tests.support.hostile import HostileComponent

FLOOD = 5000


class SparingResponder(Responder):
    """Answers everyone but the hostile domain, whose requests it keeps."""

    def _answer(self, request):
        if "@evil." not in request.get("from", ""):
            super()._answer(request)


def flood(evil, count=FLOOD, users=50):
    """C{count} gets, each from a resource of its own, of C{users} users."""
    evil.send_all(
        "<iq type='get' id='f%d' from=%s to=%s><query xmlns='urn:test'/></iq>"
        % (i, quoteattr(evil.jid("u%d" % (i % users), "r%d" % i)), quoteattr(COMPONENT))
        for i in range(count)
    )


def errors(evil, count, timeout=30.0):
    return evil.wait_for(
        lambda el: tag(el) == "iq" and el.get("type") == "error", count=count, timeout=timeout
    )


def served(requester, id):
    requester.send(
        "<iq type='get' id=%s to=%s><query xmlns='urn:test'/></iq>" % (quoteattr(id), quoteattr(COMPONENT))
    )
    return requester.wait_for(lambda s: s.get("id") == id, 10).get("type") == "result"


def test_a_flood_from_one_domain_leaves_the_others_served(prosody, target, clients, proxy):
    service = clients(user(target), "a", SparingResponder)
    # A domain's share: a quarter of 400.
    p = proxy(target, "--max-in-flight", "400")
    online(p, service.jid)
    events = len(p.events())
    with HostileComponent.of(prosody) as evil:
        flood(evil)
        refused = errors(evil, FLOOD - 100)
        assert {(error_type(e), error_condition(e)) for e in refused} == {
            ("wait", "resource-constraint")
        }
        assert [served(clients("legit%d" % i, "r"), "q%d" % i) for i in range(3)] == [True] * 3
        assert len([r for r in service.requests if "@evil." in r.get("from")]) == 100
        assert len(p.events()) - events < 5, "no event per refused request:\n" + p.log()
        p.stop()
    summary = Logged(
        event="summary", action="refused", noun="requests", count=4900, senders=1000,
        capped="+", domain="evil.example.org",
    )
    assert len([e for e in p.events() if summary(e)]) == 1, p.log()
    assert "refused 4,900 requests from 1000+ JIDs of evil.example.org" in p.log()


def test_deny_list(prosody, target, clients, proxy):
    service = clients(user(target), "a", Responder)
    p = proxy(target, "--deny", "evil.example.org, shunned@example.org")
    online(p, service.jid)
    with HostileComponent.of(prosody) as evil:
        flood(evil, 10)
        refused = errors(evil, 10)
        assert {(error_type(e), error_condition(e)) for e in refused} == {("auth", "forbidden")}
    shunned = clients("shunned", "r")
    shunned.send("<iq type='get' id='s' to=%s><query xmlns='urn:test'/></iq>" % quoteattr(COMPONENT))
    assert error_condition(shunned.wait_for(lambda s: s.get("id") == "s")) == "forbidden"
    assert served(clients("welcome", "r"), "w")
    assert all("@evil." not in r.get("from") and "shunned" not in r.get("from") for r in service.requests)


def test_allow_list(prosody, target, clients, proxy):
    service = clients(user(target), "a", Responder)
    p = proxy(target, "--allow", "friend@example.org")
    online(p, service.jid)
    assert served(clients("friend", "r"), "f")
    stranger = clients("stranger", "r")
    stranger.send("<iq type='get' id='s' to=%s><query xmlns='urn:test'/></iq>" % quoteattr(COMPONENT))
    reply = stranger.wait_for(lambda s: s.get("id") == "s")
    assert (error_type(reply), error_condition(reply)) == ("auth", "forbidden")
    assert [r.get("id") for r in service.requests] == ["f"]
