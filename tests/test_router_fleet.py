"""
The IQ router over a fleet: draining resources, and requests routed by
the features the resources advertise (XEP-0115), with the router's own
disco#info requests in its table. Both stream paths, as in test_router.
"""

import pytest
from twisted.internet.task import Clock
from twisted.words.xish import domish

from client_proxy.features import fleetDispatch
from client_proxy.inflight import RequestTable
from client_proxy.presence import Resources
from client_proxy.router import QUERY_PREFIX, IQRouter
from client_proxy.routing import Routing
from tests.test_features import worker_caps
from tests.test_router import (
    COMPONENT,
    R1,
    R2,
    TARGET,
    USER,
    RecordingMetrics,
    Stream,
    bounce,
    error_of,
    expiries,
    iq,
)

R3 = TARGET + "/c"
DISCO_INFO = "http://jabber.org/protocol/disco#info"


def request(type, namespace, id="1234", sender=USER):
    element = iq(type, sender, COMPONENT, id=id, payload=False)
    element.addElement((namespace, "query"))
    return element


@pytest.fixture(params=["fast path", "domish"])
def fleet(request):
    """
    A router whose strategy is round-robin over the resources not
    draining, routing by features if the test's name says so.
    """
    stub = Stream(fast=request.param == "fast path")
    clock = Clock()
    resources = Resources()
    table = RequestTable(timeout=30, maxPerRequester=10, maxTotal=20, maxPerDomain=20)
    dispatch = fleetDispatch(
        resources, table, "round-robin", routeByFeatures="features" in request.node.name
    )
    strategy, features = dispatch.strategy, dispatch.features
    router = IQRouter(
        Routing(COMPONENT, TARGET, resources, strategy, clock=clock, features=features),
        table,
        clock,
    )
    router.metrics = RecordingMetrics()
    stub.connect(router)
    return stub, clock, resources, router


def is_query(stanza):
    return stanza["id"].startswith(QUERY_PREFIX)


def queries(stub):
    """The disco#info requests the router sent since the last call."""
    seen = stub.__dict__.setdefault("seen", set())
    new = [s for s in stub.output if is_query(s) and s["id"] not in seen]
    seen.update(s["id"] for s in new)
    return new


def others(stub):
    """What the router sent but its own requests."""
    return [s for s in stub.output if not is_query(s)]


def pop(stub):
    """The last stanza sent but the router's own requests; removed."""
    while is_query(stub.output[-1]):
        stub.sent.pop()
    return stub.pop()


def answer_query(stub, query, inner, sender=None):
    element = domish.Element((None, "iq"))
    element["type"] = "result"
    element["from"] = sender or query["to"]
    element["to"] = COMPONENT
    element["id"] = query["id"]
    element.addRawXml(inner.decode("utf-8"))
    return stub.receive(element)


# Drain


def test_a_draining_resource_gets_nothing_new(fleet):
    stub, clock, resources, router = fleet
    resources.available(R1)
    resources.available(R2)
    stub.receive(request("set", "urn:x", id="held"))
    assert pop(stub)["to"] == R1
    resources.available(R1, show="xa")
    for n in range(3):
        stub.receive(request("set", "urn:x", id=str(n)))
        assert pop(stub)["to"] == R2
    # What it holds is still routed back.
    stub.receive(iq("result", R1, COMPONENT + "/" + USER, id="held"))
    answer = pop(stub)
    assert (answer["type"], answer["id"], answer["to"]) == ("result", "held", USER)


def test_only_draining_resources_is_as_none_online(fleet):
    stub, clock, resources, router = fleet
    resources.available(R1, show="xa")
    stub.receive(request("set", "urn:x"))
    assert error_of(pop(stub)) == ("cancel", "service-unavailable")
    assert ("requestRefused", "no_resource") in router.metrics.events
    resources.available(R1)
    stub.receive(request("set", "urn:x", id="2"))
    assert pop(stub)["to"] == R1


def test_a_get_at_a_draining_resource_that_leaves_moves_to_an_eligible_one(fleet):
    stub, clock, resources, router = fleet
    for resource in (R1, R2, R3):
        resources.available(resource)
    stub.receive(request("get", "urn:x"))
    assert pop(stub)["to"] == R1
    resources.available(R2, show="xa")
    resources.unavailable(R1)
    assert pop(stub)["to"] == R3


# Features


def test_features_requests_go_where_their_namespace_is_offered(fleet):
    stub, clock, resources, router = fleet
    caps_a, answer_a = worker_caps(["urn:a", "urn:common"])
    caps_b, answer_b = worker_caps(["urn:b", "urn:common"])
    resources.available(R1, caps=caps_a)
    resources.available(R2, caps=caps_b)
    query_a, query_b = queries(stub)
    assert (query_a["to"], query_a["from"], query_a["type"]) == (R1, COMPONENT, "get")
    [payload] = query_a.elements()
    assert (payload.uri, payload["node"]) == (DISCO_INFO, caps_a.node + "#" + caps_a.ver)
    assert len(router.table) == 2, "the queries are in flight"
    assert answer_query(stub, query_a, answer_a)
    assert answer_query(stub, query_b, answer_b)
    assert others(stub) == [], "their answers go nowhere"
    assert len(router.table) == 0

    for n in range(4):
        stub.receive(request("get", "urn:a", id="a%d" % n))
        assert pop(stub)["to"] == R1
        stub.receive(request("set", "urn:b", id="b%d" % n))
        assert pop(stub)["to"] == R2
    stub.receive(request("get", "urn:common", id="c1"))
    stub.receive(request("get", "urn:common", id="c2"))
    assert {pop(stub)["to"], pop(stub)["to"]} == {R1, R2}


def test_features_nobody_offering_the_namespace_is_service_unavailable(fleet):
    stub, clock, resources, router = fleet
    caps, answer = worker_caps(["urn:a"])
    resources.available(R1, caps=caps)
    [query] = queries(stub)
    answer_query(stub, query, answer)
    router.metrics.events.clear()
    stub.receive(request("set", "urn:other", id="x"))
    reply = pop(stub)
    assert error_of(reply) == ("cancel", "service-unavailable")
    assert (reply["to"], reply["from"], reply["id"]) == (USER, COMPONENT, "x")
    assert router.metrics.events == [
        ("requestReceived",),
        ("requestRefused", "no_feature"),
        ("answerSent", "error", "service-unavailable"),
    ]
    assert len(router.table) == 0


def test_features_unknown_until_the_answer_serve_everything(fleet):
    stub, clock, resources, router = fleet
    caps, answer = worker_caps(["urn:a"])
    resources.available(R1, caps=caps)
    queries(stub)
    stub.receive(request("get", "urn:other"))
    assert pop(stub)["to"] == R1


def test_features_the_query_has_its_own_timeout_and_the_next_resource_is_asked(fleet):
    stub, clock, resources, router = fleet
    caps, answer = worker_caps(["urn:a"])
    resources.available(R1)
    stub.receive(request("get", "urn:x", id="slow"))
    pop(stub)
    clock.advance(1)
    resources.available(R2, caps=caps)
    resources.available(R3, caps=caps)
    [first] = queries(stub)
    assert first["to"] == R2
    # Its timer comes before the request's, which was armed first.
    clock.advance(router.features.discovery.timeout)
    [second] = queries(stub)
    assert second["to"] == R3
    assert others(stub) == [], "no error for a query of the component's own"
    assert ("requestTimedOut",) not in router.metrics.events
    answer_query(stub, second, answer)
    answer_query(stub, first, answer)  # too late: dropped
    assert others(stub) == []
    assert ("stanzaDropped", "unsolicited") in router.metrics.events
    clock.advance(30)
    assert error_of(pop(stub)) == ("wait", "remote-server-timeout")
    assert expiries(clock, router) == []


def test_features_a_queried_resource_going_away_asks_the_next(fleet):
    stub, clock, resources, router = fleet
    caps, answer = worker_caps(["urn:a"])
    resources.available(R1, caps=caps)
    resources.available(R2, caps=caps)
    [first] = queries(stub)
    resources.unavailable(R1)
    [second] = queries(stub)
    assert second["to"] == R2
    assert others(stub) == []
    answer_query(stub, second, answer)
    stub.receive(request("get", "urn:a"))
    assert pop(stub)["to"] == R2


def test_features_an_error_asks_the_next(fleet):
    stub, clock, resources, router = fleet
    caps, answer = worker_caps(["urn:a"])
    resources.available(R1, caps=caps)
    resources.available(R2, caps=caps)
    [first] = queries(stub)
    stub.receive(bounce(R1, COMPONENT, id=first["id"]))
    [second] = queries(stub)
    assert second["to"] == R2 and others(stub) == []


def test_features_an_answer_from_another_resource_is_dropped(fleet):
    stub, clock, resources, router = fleet
    caps, answer = worker_caps(["urn:a"])
    resources.available(R1, caps=caps)
    resources.available(R2)
    [query] = queries(stub)
    answer_query(stub, query, answer, sender=R2)
    assert ("stanzaDropped", "unsolicited") in router.metrics.events
    assert len(router.table) == 1


def test_features_a_get_fails_over_within_its_namespace(fleet):
    stub, clock, resources, router = fleet
    caps_a, answer_a = worker_caps(["urn:a"])
    caps_b, answer_b = worker_caps(["urn:b"])
    resources.available(R1, caps=caps_a)
    resources.available(R2, caps=caps_b)
    resources.available(R3, caps=caps_a)
    for query, answer in zip(queries(stub), (answer_a, answer_b)):
        answer_query(stub, query, answer)
    stub.receive(request("get", "urn:a", id="g"))
    assert pop(stub)["to"] == R1
    stub.receive(bounce(R1, COMPONENT + "/" + USER, id="g"))
    assert pop(stub)["to"] == R3, "not R2, which does not offer urn:a"
    resources.unavailable(R1)
    resources.unavailable(R3)
    assert error_of(pop(stub)) == ("cancel", "service-unavailable")


def test_features_a_stop_answers_requesters_only(fleet):
    stub, clock, resources, router = fleet
    caps, answer = worker_caps(["urn:a"])
    resources.available(R1, caps=caps)
    queries(stub)
    stub.receive(request("get", "urn:a"))
    pop(stub)
    assert router.answerAllWithError("recipient-unavailable", "wait", "stopping") == 1
    [reply] = others(stub)
    assert reply["to"] == USER


def test_features_not_sent_without_a_connection(fleet):
    stub, clock, resources, router = fleet
    caps, answer = worker_caps(["urn:a"])
    router.streams.disconnected(COMPONENT)
    resources.available(R1, caps=caps)
    assert len(router.table) == 0
    router.streams.connected(COMPONENT, stub.xmlstream)
    resources.available(R2, caps=caps)
    [query] = queries(stub)
    assert query["to"] == R1, "asked again with the next announcement"


def test_features_a_query_too_large_to_send_is_not_sent(fleet):
    stub, clock, resources, router = fleet
    caps, answer = worker_caps(["urn:a"])
    resources.available(R1, caps=caps._replace(node="x" * router.streams.maxStanzaSize))
    assert len(router.table) == 0 and stub.output == []
    stub.receive(request("get", "urn:other"))
    assert pop(stub)["to"] == R1, "its features unknown, it serves everything"
