"""
The resources eligible for a request: not draining, and offering the
namespace of its payload (XEP-0115 caps, learned once per ver); the
strategies choose among them.
"""

import base64
import hashlib
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import LogLevel, globalLogPublisher

from client_proxy.caps import Caps
from client_proxy.dispatch import STRATEGIES, StickyStrategy
from client_proxy.features import CapsDiscovery, FeatureRouting, fleetDispatch
from client_proxy.inflight import ForwardedSet, RequestTable
from client_proxy.presence import Resources, Undrained

TARGET = "service@example.org"
A, B, C, D = (TARGET + "/" + name for name in "abcd")
USER = "user@example.org/abc"
REQUESTERS = ["user%d@example.org/phone" % n for n in range(200)]
NODE = "https://example.org/worker"


def worker_caps(features, hash="sha-1", node=NODE):
    """
    The caps of a worker offering C{features}, and its disco#info answer:
    an identity and the features, hashed as XEP-0115, 5.1 says.
    """
    S = "client/bot//worker<" + "".join(f + "<" for f in sorted(features))
    ver = base64.b64encode(hashlib.sha1(S.encode("utf-8")).digest()).decode()
    answer = (
        "<query xmlns='http://jabber.org/protocol/disco#info' node='%s#%s'>"
        "<identity category='client' type='bot' name='worker'/>%s</query>"
        % (node, ver, "".join("<feature var='%s'/>" % f for f in features))
    ).encode("utf-8")
    return Caps(hash, node, ver), answer


def payload(namespace):
    return ("<query xmlns='%s'/>" % (namespace,)).encode("utf-8")


class Querier:
    """Records the disco#info requests; the test answers them."""

    def __init__(self, accept=True):
        self.accept = accept
        self.sent = []

    def query(self, resource, payload, timeout, answered):
        if not self.accept:
            return False
        self.sent.append((resource, payload, timeout, answered))
        return True

    def answer(self, inner, index=-1):
        resource, payload, timeout, answered = self.sent.pop(index)
        answered(inner)
        return resource


@pytest.fixture
def logged():
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def warnings(events):
    return [e for e in events if e.get("log_level") == LogLevel.warn]


# Drain


def test_draining_resources_are_not_eligible():
    resources = Resources()
    resources.available(A)
    resources.available(B, show="xa")
    undrained = Undrained(resources)
    resources.available(C, show="away")
    assert list(undrained.online()) == [A, C]
    resources.available(A, show="xa")
    assert list(undrained.online()) == [C]
    resources.available(A)  # no show: eligible again at once
    assert list(undrained.online()) == [C, A]
    resources.unavailable(B)
    resources.unavailable(C)
    assert list(undrained.online()) == [A]


def test_the_drain_show_is_a_setting():
    resources = Resources()
    undrained = Undrained(resources, drainShow="dnd")
    resources.available(A, show="xa")
    resources.available(B, show="dnd")
    assert list(undrained.online()) == [A]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_chooses_no_draining_resource(name):
    resources = Resources()
    dispatch = fleetDispatch(resources, RequestTable(30, 1000, 1000), name)
    strategy = dispatch.strategy
    assert dispatch.features is None
    for resource in (A, B, C):
        resources.available(resource)
    resources.available(B, show="xa")
    assert {strategy.choose(r) for r in REQUESTERS} <= {A, C}
    assert strategy.choose(USER, exclude=A) == C
    resources.available(A, show="xa")
    resources.available(C, show="xa")
    assert strategy.choose(USER) is None, "only draining ones: as if none were online"
    resources.available(B)
    assert strategy.choose(USER) == B


def test_a_closed_dispatch_follows_nothing():
    """
    A reload replaces the dispatch; the old one, closed, follows neither
    the resources nor the table's counts, so that nothing keeps it busy
    or alive.
    """
    resources = Resources()
    table = RequestTable(30, 1000, 1000)
    dispatch = fleetDispatch(resources, table, "least-pending", routeByFeatures=True)
    resources.available(A)
    resources.available(B)
    dispatch.close()
    resources.available(C)
    assert C not in dispatch.eligible
    table.add(ForwardedSet(requester=USER, stanzaID="1", to="p", resource=A), now=0)
    # Following the table, it would choose B alone (A holds a request).
    assert {dispatch.strategy.choose(USER) for _ in range(2)} == {A, B}


def test_sticky_moves_only_the_drained_resources_requesters_and_back():
    resources = Resources()
    for resource in (A, B, C, D):
        resources.available(resource)
    sticky = StickyStrategy(Undrained(resources), RequestTable(30, 1000, 1000))
    before = {r: sticky.choose(r) for r in REQUESTERS}
    resources.available(B, show="xa")
    during = {r: sticky.choose(r) for r in REQUESTERS}
    assert all(during[r] == before[r] for r in REQUESTERS if before[r] != B)
    assert B not in during.values()
    resources.available(B)
    assert {r: sticky.choose(r) for r in REQUESTERS} == before


def test_priority_over_the_undrained():
    resources = Resources()
    resources.available(A, 5)
    resources.available(B, 1)
    strategy = STRATEGIES["priority"](Undrained(resources), RequestTable(30, 1000, 1000))
    assert strategy.choose(USER) == A
    resources.available(A, 5, show="xa")
    assert strategy.choose(USER) == B
    resources.available(A, 0)  # back, lower than B now
    assert strategy.choose(USER) == B
    resources.available(A, 9, show="xa")  # a priority change while draining
    resources.available(A, 9)
    assert strategy.choose(USER) == A


def test_a_repeated_presence_changes_nothing():
    resources = Resources()
    seen = []

    class Index:
        def __getattr__(self, name):
            return lambda *args: seen.append((name,) + args)

    from zope.interface import directlyProvides

    from client_proxy.presence import IPresenceIndex

    index = Index()
    directlyProvides(index, IPresenceIndex)
    resources.addObserver(index)
    caps, _ = worker_caps(["urn:a"])
    resources.available(A, 1, "away", caps)
    resources.available(A, 1, "away", caps)
    resources.available(A, 2, "away", caps)
    resources.available(A, 2, "xa", caps)
    resources.available(A, 2, "xa", None)
    resources.available(A, 2)
    assert seen == [
        ("resourceOnline", A),
        ("priorityChanged", A),
        ("presenceChanged", A),
        ("presenceChanged", A),
        ("presenceChanged", A),
    ]
    assert (resources.show(A), resources.caps(A)) == (None, None)


def test_draining_is_logged(logged):
    resources = Resources()
    Undrained(resources)
    resources.available(A)
    resources.available(A, show="xa")
    resources.available(A, show="chat")
    resources.available(B, show="xa")  # online, and draining from the start
    texts = [e["log_format"].format(**e) for e in logged if "resource" in e]
    assert texts == [
        "Resource draining: " + A,
        "Resource no longer draining: " + A,
        "Resource draining: " + B,
    ]


# Learning what a ver stands for


def test_one_query_per_ver_for_a_whole_fleet(logged):
    discovery = CapsDiscovery()
    discovery.querier = querier = Querier()
    learned = []
    discovery.learned = lambda resources, features: learned.append((resources, features))
    caps, answer = worker_caps(["urn:a", "urn:b"])
    fleet = ["%s/w%d" % (TARGET, n) for n in range(20)]
    assert all(discovery.announced(r, caps) is None for r in fleet)
    [(resource, query, timeout, _)] = querier.sent
    assert resource == fleet[0] and timeout == discovery.timeout
    assert query == (
        "<query xmlns='http://jabber.org/protocol/disco#info' node='%s#%s'/>" % (NODE, caps.ver)
    ).encode()
    querier.answer(answer)
    assert learned == [(fleet, frozenset(["urn:a", "urn:b"]))]
    # Known from now on, with no other query, whatever the node.
    assert discovery.announced(A, caps._replace(node="https://other")) == {"urn:a", "urn:b"}
    assert querier.sent == [] and warnings(logged) == []


def test_a_mismatch_is_rejected_and_the_next_resource_asked(logged):
    discovery = CapsDiscovery()
    discovery.querier = querier = Querier()
    learned = []
    discovery.learned = lambda resources, features: learned.append(resources)
    caps, answer = worker_caps(["urn:a"])
    _, lie = worker_caps(["urn:a", "urn:extra"])
    for resource in (A, B, C):
        discovery.announced(resource, caps)
    assert querier.answer(lie) == A
    [warning] = warnings(logged)
    assert "Rejected the disco#info of %s for ver %s" % (A, caps.ver) in (
        warning["log_format"].format(**warning)
    )
    assert learned == []
    assert querier.answer(answer) == B
    assert learned == [[A, B, C]]


def test_a_ver_that_never_checks_out_is_given_up(logged):
    discovery = CapsDiscovery()
    discovery.querier = querier = Querier()
    caps, _ = worker_caps(["urn:a"])
    _, lie = worker_caps(["urn:b"])
    fleet = ["%s/w%d" % (TARGET, n) for n in range(10)]
    for resource in fleet:
        discovery.announced(resource, caps)
    for _ in range(discovery.maxTries):
        querier.answer(lie)
    assert querier.sent == []
    assert "after 3 tries" in warnings(logged)[-1]["log_format"].format(**warnings(logged)[-1])
    # Rejected: the resources announcing it serve everything, and no more
    # queries for it.
    assert discovery.announced(D, caps) is None and querier.sent == []


@pytest.mark.parametrize("failure", ["error", "gone"])
def test_no_answer_asks_the_next(failure):
    discovery = CapsDiscovery()
    discovery.querier = querier = Querier()
    learned = []
    discovery.learned = lambda resources, features: learned.append(resources)
    caps, answer = worker_caps(["urn:a"])
    discovery.announced(A, caps)
    discovery.announced(B, caps)
    if failure == "gone":
        discovery.withdrawn(A)
    assert querier.answer(None) == A
    assert querier.answer(answer) == B
    assert learned == [[B]] if failure == "gone" else [[A, B]]


def test_a_query_not_sent_is_tried_again_with_the_next_announcement():
    discovery = CapsDiscovery()
    discovery.querier = querier = Querier(accept=False)
    caps, answer = worker_caps(["urn:a"])
    discovery.announced(A, caps)
    querier.accept = True
    discovery.announced(B, caps)
    assert [sent[0] for sent in querier.sent] == [A]


def test_no_query_without_verifiable_caps():
    discovery = CapsDiscovery()
    discovery.querier = querier = Querier()
    caps, _ = worker_caps(["urn:a"])
    assert discovery.announced(A, None) is None
    assert discovery.announced(B, caps._replace(hash="md5")) is None
    assert querier.sent == []


def test_the_cache_is_bounded():
    discovery = CapsDiscovery()
    discovery.maxKnown = 3
    discovery.querier = querier = Querier()
    vers = [worker_caps(["urn:%d" % n]) for n in range(5)]
    for n, (caps, answer) in enumerate(vers):
        discovery.announced("%s/w%d" % (TARGET, n), caps)
        querier.answer(answer)
    assert discovery.announced(A, vers[4][0]) == {"urn:4"}
    assert discovery.announced(A, vers[0][0]) is None, "forgotten, asked again"
    assert len(querier.sent) == 1


def test_forgetting_keeps_what_is_known():
    discovery = CapsDiscovery()
    discovery.querier = querier = Querier()
    known, answer = worker_caps(["urn:a"])
    pending, _ = worker_caps(["urn:b"])
    discovery.announced(A, known)
    querier.answer(answer)
    discovery.announced(B, pending)
    discovery.forgotten()
    assert discovery.announced(C, known) == {"urn:a"}
    querier.answer(None)  # the query in flight ends in its own time
    assert discovery.announced(D, pending) is None
    assert [sent[0] for sent in querier.sent] == [D]


# Routing by features


def routed(name="round-robin", table=None):
    """Feature routing with strategy C{name} over fresh resources."""
    resources = Resources()
    table = RequestTable(30, 1000, 1000) if table is None else table
    features = fleetDispatch(resources, table, name, routeByFeatures=True).features
    assert features is not None
    querier = Querier()
    features.discovery.querier = querier
    return resources, features, querier


def advertised(resources, querier, resource, features):
    """C{resource} comes online offering C{features}, learned at once."""
    caps, answer = worker_caps(features)
    resources.available(resource, caps=caps)
    querier.answer(answer)
    return caps


def choices(features, namespace, count=40):
    strategy = features.strategyFor(payload(namespace))
    return {strategy.choose(requester) for requester in REQUESTERS[:count]}


def test_requests_go_only_where_their_namespace_is_offered():
    resources, features, querier = routed()
    caps_a, answer_a = worker_caps(["urn:common", "urn:a"])
    caps_b, answer_b = worker_caps(["urn:common", "urn:b"])
    resources.available(A, caps=caps_a)
    resources.available(B, caps=caps_b)
    # Until their disco#info arrives, they serve everything.
    assert choices(features, "urn:a") == {A, B}
    querier.answer(answer_a, 0)
    querier.answer(answer_b, 0)
    assert choices(features, "urn:a") == {A}
    assert choices(features, "urn:b") == {B}
    assert choices(features, "urn:common") == {A, B}
    assert choices(features, "urn:nobody") == {None}
    assert features.strategyFor(payload("urn:a")).choose(USER, exclude=A) is None


def test_a_resource_without_caps_serves_everything():
    resources, features, querier = routed()
    advertised(resources, querier, A, ["urn:a"])
    resources.available(B)
    assert choices(features, "urn:a") == {A, B}
    assert choices(features, "urn:nobody") == {B}
    resources.unavailable(B)
    assert choices(features, "urn:nobody") == {None}


def test_namespaces_nobody_offers_get_no_set():
    """A requester's namespaces cost nothing: the sets are the target's."""
    resources, features, querier = routed()
    advertised(resources, querier, A, ["urn:a"])
    resources.available(B)
    for n in range(1000):
        features.strategyFor(payload("urn:hostile:%d" % n)).choose(USER)
    assert set(features.offered()) == {"urn:a"}
    assert len(features._strategies) == 0


@pytest.mark.parametrize(
    "written",
    [
        b"<query xmlns='urn:a'/>",
        b"<query xmlns='urn:a'>text</query>",
        b"<query id='x' xmlns=\"urn:a\"><more/></query>",
        b"<query a='>' xmlns='urn:a'/>",
        b"<p:query xmlns:p='urn:a'/>",
        b"<query xmlns='urn:&#97;'/>",
    ],
)
def test_however_the_payload_is_written(written):
    resources, features, querier = routed()
    advertised(resources, querier, A, ["urn:a"])
    advertised(resources, querier, B, ["urn:b"])
    for _ in range(2):  # read, then remembered
        assert features.strategyFor(written).choose(USER) == A


def test_the_first_tags_remembered_are_bounded():
    resources, features, querier = routed()
    advertised(resources, querier, A, ["urn:a"])
    for n in range(3 * features.maxTags):
        features.strategyFor(b"<q%d xmlns='urn:a'/>" % n).choose(USER)
    assert len(features._tags) <= features.maxTags


def test_a_set_goes_with_its_last_advertiser():
    table = RequestTable(30, 1000, 1000)
    resources, features, querier = routed("least-pending", table)
    caps_a = advertised(resources, querier, A, ["urn:a"])
    observers = len(table._pendingObservers)
    assert choices(features, "urn:a") == {A}
    assert len(table._pendingObservers) == observers + 1
    resources.unavailable(A)
    assert set(features.offered()) == set()
    assert len(table._pendingObservers) == observers, "the strategy let go of the table"
    resources.available(A, caps=caps_a)
    assert choices(features, "urn:a") == {A}


def test_draining_and_features_compose():
    resources, features, querier = routed()
    caps, answer = worker_caps(["urn:a"])
    resources.available(A, caps=caps)
    resources.available(B, caps=caps)
    querier.answer(answer)
    resources.available(A, show="xa", caps=caps)
    assert choices(features, "urn:a") == {B}
    resources.available(B, show="xa", caps=caps)
    assert choices(features, "urn:a") == {None}
    assert len(features.base) == 0
    resources.available(A, caps=caps)
    assert choices(features, "urn:a") == {A}


def test_new_caps_place_a_resource_again():
    resources, features, querier = routed()
    old, old_answer = worker_caps(["urn:a"])
    new, new_answer = worker_caps(["urn:a", "urn:b"])
    resources.available(A, caps=old)
    querier.answer(old_answer)
    assert choices(features, "urn:b") == {None}
    resources.available(A, caps=new)
    assert choices(features, "urn:b") == {A}, "unknown until learned: serves everything"
    querier.answer(new_answer)
    assert choices(features, "urn:b") == {A}
    assert choices(features, "urn:other") == {None}
    resources.available(A, show="away", caps=new)  # another show, same caps
    assert querier.sent == []


def test_priority_in_every_set():
    resources, features, querier = routed("priority")
    caps, answer = worker_caps(["urn:a"])
    resources.available(A, 1, caps=caps)
    resources.available(B, 2, caps=caps)
    resources.available(C, 0)
    querier.answer(answer, 0)
    assert choices(features, "urn:a") == {B}
    assert choices(features, "urn:nobody") == {C}
    resources.available(A, 3, caps=caps)
    resources.available(C, 4)
    assert choices(features, "urn:a") == {C}
    resources.available(C, -1)
    assert choices(features, "urn:a") == {A}


def test_forgetting_empties_every_set():
    resources, features, querier = routed()
    caps_a = advertised(resources, querier, A, ["urn:a"])
    resources.available(B)
    assert choices(features, "urn:a") == {A, B}
    resources.forget()
    assert choices(features, "urn:a") == {None}
    assert choices(features, "urn:nobody") == {None}
    resources.available(A, caps=caps_a)
    assert querier.sent == [], "the ver is still known"
    assert choices(features, "urn:a") == {A}


NAMES = [TARGET + "/" + name for name in "abcdef"]
FEATURES = [["urn:a"], ["urn:b"], ["urn:a", "urn:b"], ["urn:c"]]
NAMESPACES = ["urn:a", "urn:b", "urn:c", "urn:d"]

events = st.lists(
    st.one_of(
        st.tuples(
            st.just("available"),
            st.integers(0, 5),
            st.integers(-1, 2),
            st.sampled_from([None, "xa", "away"]),
            st.none() | st.integers(0, 3),
        ),
        st.tuples(st.just("unavailable"), st.integers(0, 5)),
        st.tuples(st.just("answer"), st.booleans()),
        st.tuples(st.just("forget")),
        st.tuples(
            st.just("choose"),
            st.sampled_from(REQUESTERS[:5]),
            st.sampled_from(NAMESPACES),
            st.none() | st.integers(0, 5),
        ),
    ),
    max_size=60,
)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@given(events=events)
@settings(max_examples=60, deadline=None)
def test_every_choice_is_eligible(name, events):
    """
    Whatever happens, a choice for a namespace is a resource online, not
    draining, and offering it or with features unknown; and C{None} only
    when there is none.
    """
    resources, features, querier = routed(name)
    vers = [worker_caps(f) for f in FEATURES]
    answers = {caps.ver: answer for caps, answer in vers}
    known = {}  # ver -> features, as the component learns them
    for event in events:
        if event[0] == "available":
            _, n, priority, show, ver = event
            resources.available(NAMES[n], priority, show, None if ver is None else vers[ver][0])
        elif event[0] == "unavailable":
            resources.unavailable(NAMES[event[1]])
        elif event[0] == "answer" and querier.sent:
            resource, query, timeout, answered = querier.sent.pop(0)
            ver = query.decode().rsplit("#", 1)[1].split("'")[0]
            if event[1]:
                known[ver] = set(FEATURES[[c.ver for c, a in vers].index(ver)])
            answered(answers[ver] if event[1] else None)
        elif event[0] == "forget":
            resources.forget()
        elif event[0] == "choose":
            _, requester, namespace, excluded = event
            exclude = None if excluded is None else NAMES[excluded]

            def offers(resource):
                caps = resources.caps(resource)
                return caps is None or caps.ver not in known or namespace in known[caps.ver]

            eligible = {
                r for r in resources.online()
                if resources.show(r) != "xa" and offers(r) and r != exclude
            }
            chosen = features.strategyFor(payload(namespace)).choose(requester, exclude)
            assert chosen in eligible if eligible else chosen is None


def test_least_pending_per_namespace():
    table = RequestTable(30, 1000, 1000)
    resources, features, querier = routed("least-pending", table)
    caps, answer = worker_caps(["urn:a"])
    resources.available(A, caps=caps)
    resources.available(B, caps=caps)
    querier.answer(answer)
    strategy = features.strategyFor(payload("urn:a"))
    for n in range(3):
        table.add(ForwardedSet(requester=USER, stanzaID=str(n), to="p", resource=A), now=0)
    assert Counter(strategy.choose(r) for r in REQUESTERS[:10]) == {B: 10}


def test_random_spreads_within_a_namespace():
    resources, features, querier = routed("random")
    caps, answer = worker_caps(["urn:a"])
    for resource in (A, B, C):
        resources.available(resource, caps=caps)
    resources.available(D)
    querier.answer(answer)
    strategy = features.strategyFor(payload("urn:a"))
    random.seed(1)
    assert {strategy.choose(r) for r in REQUESTERS} == {A, B, C, D}
    assert {features.strategyFor(payload("urn:z")).choose(r) for r in REQUESTERS} == {D}


def test_feature_routing_follows_the_base_it_is_built_over():
    """Resources already there when the routing is built are placed too."""
    resources = Resources()
    resources.available(A)
    routing = FeatureRouting(
        Undrained(resources),
        lambda members: STRATEGIES["round-robin"](members, RequestTable(30, 10, 10)),
        CapsDiscovery(),
    )
    assert routing.strategyFor(payload("urn:x")).choose(USER) == A
