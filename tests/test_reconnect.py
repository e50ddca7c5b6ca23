"""
A reconnect loses no request: the component's connection to a real
Prosody is cut while requests are in flight.
"""

from harness.proxy import Logged
from harness.xmpp import Responder, error_condition, error_type
from tests.conftest import COMPONENT, online, user
from tests.support.relay import Relay
from tests.test_metrics_integration import Metrics
from tests.test_reliability import LOST, answer, answer_to, send


def test_an_answer_after_a_reconnect_reaches_its_requester(prosody, target, clients, proxy):
    service = clients(user(target), "a", Responder, answer=False)
    with Relay(prosody.component_port) as relay:
        p = proxy(target, "--endpoint", "tcp:host=127.0.0.1:port=%d" % relay.port)
        online(p, service.jid)
        requester = clients("patient", "r")
        send(requester, "before")
        service.wait_for_requests(1)
        relay.cut()
        relay.wait_for_connections(2)
        online(p, service.jid, count=2)  # learned again on the new stream
        answer(service, service.requests[0])
        reply = answer_to(requester, "before")
        assert reply.get("type") == "result"
        assert reply.get("from") == COMPONENT


def test_a_request_that_expires_while_disconnected_is_answered(prosody, target, clients, proxy):
    """
    Its error goes out when the next connection is up, as if the stream
    had never dropped: the requester gets exactly one answer.
    """
    service = clients(user(target), "a", Responder, answer=False)
    with Relay(prosody.component_port) as relay:
        p = proxy(
            target, "--timeout", "1", "--endpoint", "tcp:host=127.0.0.1:port=%d" % relay.port,
            "--metrics", "tcp:0:interface=127.0.0.1",
        )
        metrics = Metrics(p.listening_port("Site"))
        online(p, service.jid)
        requester = clients("waiting", "r")
        send(requester, "expiring")
        service.wait_for_requests(1)
        relay.pause()  # the server is out of reach past the deadline
        p.wait_for_log_event(Logged(LOST, count=1))
        metrics.wait_for("client_proxy_requests_timed_out_total", 1)
        relay.resume()
        reply = answer_to(requester, "expiring", timeout=15)
        assert (error_type(reply), error_condition(reply)) == ("wait", "remote-server-timeout")
