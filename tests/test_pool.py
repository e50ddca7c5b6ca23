"""
An instance that owns a component JID of its own (--instance-jid): the
addresses it translates, and its presence subscription, use that JID, so
answers come back to it.
"""

from xml.sax.saxutils import quoteattr

import pytest

from harness.prosody import Prosody
from harness.proxy import client_proxy
from harness.xmpp import Client, Responder, error_condition, tag
from tests.conftest import COMPONENT, authenticated, online

NODE = "node1." + COMPONENT


@pytest.fixture
def server():
    with Prosody(components={COMPONENT: "shared-secret", NODE: "shared-secret"}) as server:
        yield server


def test_requests_and_answers_through_the_instance_jid(server):
    service = Responder(server.c2s_port, "pool", "a").connect()
    p = client_proxy(server, "pool@example.org", "--instance-jid", NODE).start()
    try:
        authenticated(p, COMPONENT)
        authenticated(p, NODE)
        online(p, service.jid)
        assert service.subscribe_requests[0].get("from") == NODE
        requester = Client(server.c2s_port, "user", "pool").connect()
        answer = requester.iq(COMPONENT)
        assert (answer.get("type"), answer.get("from")) == ("result", COMPONENT)
        assert service.requests[-1].get("from") == NODE + "/" + requester.jid

        # The implementing client asks someone, through the shared JID.
        service.send("<iq type='get' id='out' to=%s><q xmlns='urn:test'/></iq>"
                     % quoteattr(COMPONENT + "/" + requester.jid))
        request = requester.wait_for(lambda s: tag(s) == "iq" and s.get("type") == "get")
        assert request.get("from") == NODE
        requester.send("<iq type='result' id=%s to=%s/>"
                       % (quoteattr(request.get("id")), quoteattr(NODE)))
        back = service.wait_for(lambda s: s.get("id") == "out")
        assert (back.get("type"), back.get("from")) == ("result", COMPONENT + "/" + requester.jid)

        # Messages: to the target from the instance JID.
        requester.send("<message to=%s><body>hi</body></message>" % quoteattr(COMPONENT))
        message = service.wait_for(lambda s: tag(s) == "message")
        assert message.get("from") == NODE + "/" + requester.jid
        requester.kill()
        service.kill()
    finally:
        p.remove()


def test_sigterm_answers_requests_in_flight_through_the_shared_jid(server):
    service = Responder(server.c2s_port, "pool2", "a", answer=False).connect()
    p = client_proxy(server, "pool2@example.org", "--instance-jid", NODE).start()
    try:
        online(p, service.jid)
        requester = Client(server.c2s_port, "user", "pool2").connect()
        requester.send("<iq type='get' id='held' to=%s><q xmlns='urn:test'/></iq>"
                       % quoteattr(COMPONENT))
        service.wait_for_requests(1)
        p.stop()
        answer = requester.wait_for(lambda s: s.get("id") == "held")
        assert (answer.get("from"), error_condition(answer)) == (COMPONENT, "recipient-unavailable")
        requester.kill()
        service.kill()
    finally:
        p.remove()


def test_instance_jid_must_differ():
    from harness.proxy import run_twistd

    code, output = run_twistd(["client-proxy", "--jid", COMPONENT, "--target", "s@example.org",
                               "--secret", "x", "--instance-jid", COMPONENT])
    assert code != 0 and "must differ" in output and "Traceback" not in output
