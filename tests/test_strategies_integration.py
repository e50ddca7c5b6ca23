"""
The dispatch strategies, end to end: the distribution each one promises.
"""

import threading
import time
from collections import Counter
from xml.sax.saxutils import quoteattr

from harness.xmpp import Responder, tag
from tests.conftest import COMPONENT, online, user


def served_by(answer):
    return answer.find("{urn:test}served").get("by")


def start(clients, proxy, target, strategy, specs):
    """Resources named by C{specs} (name -> Responder options), all online."""
    services = {name: clients(user(target), name, Responder, **kw) for name, kw in specs.items()}
    p = proxy(target, "--strategy", strategy)
    for service in services.values():
        online(p, service.jid)
    return p, services


def test_round_robin_is_exact(prosody, target, clients, proxy):
    start(clients, proxy, target, "round-robin", {"a": {}, "b": {}, "c": {}})
    requester = clients("user", "rr")
    counts = Counter(served_by(requester.iq(COMPONENT)) for _ in range(30))
    assert counts == {"a": 10, "b": 10, "c": 10}


def test_least_pending_gives_less_to_the_slow_resource(prosody, target, clients, proxy):
    start(clients, proxy, target, "least-pending", {"slow": {"delay": 0.3}, "fast": {}})
    requester = clients("user", "lp")
    answers = []
    done = threading.Condition()

    def collect(client, stanza):
        if tag(stanza) == "iq" and stanza.get("id", "").startswith("lp-"):
            with done:
                answers.append(stanza)
                done.notify_all()
            return True
        return False

    requester.on_stanza = collect
    total, window = 60, 4
    for i in range(total):
        with done:
            assert done.wait_for(lambda: i - len(answers) < window, 10)
        requester.send("<iq type='get' id=%s to=%s><q xmlns='urn:test'/></iq>"
                       % (quoteattr("lp-%d" % i), quoteattr(COMPONENT)))
    with done:
        assert done.wait_for(lambda: len(answers) == total, 10)
    counts = Counter(served_by(a) for a in answers)
    print("least-pending:", dict(counts))
    assert counts["fast"] >= 3 * counts["slow"]


def test_sticky_keeps_a_requester_on_one_resource(prosody, target, clients, proxy):
    p, services = start(clients, proxy, target, "sticky", {"a": {}, "b": {}, "c": {}})
    requesters = {name: clients("user", name) for name in ("one", "two", "three", "four")}
    chosen = {}
    for name, requester in requesters.items():
        seen = {served_by(requester.iq(COMPONENT)) for _ in range(5)}
        assert len(seen) == 1
        chosen[name] = seen.pop()
    # A resource leaving moves only its own requesters.
    gone = chosen["one"]
    services[gone].kill()
    p.wait_for_log("Resource offline: " + services[gone].jid)
    for name, requester in requesters.items():
        now = served_by(requester.iq(COMPONENT))
        assert now != gone
        if chosen[name] != gone:
            assert now == chosen[name]


def test_priority_prefers_the_highest(prosody, target, clients, proxy):
    p, services = start(
        clients, proxy, target, "priority", {"high": {"priority": 5}, "low": {"priority": 1}}
    )
    requester = clients("user", "prio")
    assert {served_by(requester.iq(COMPONENT)) for _ in range(10)} == {"high"}
    services["high"].kill()
    p.wait_for_log("Resource offline: " + services["high"].jid)
    assert served_by(requester.iq(COMPONENT)) == "low"


def test_round_robin_over_a_fleet(prosody, target, clients, proxy):
    names = ["w%d" % n for n in range(20)]
    start(clients, proxy, target, "round-robin", {name: {} for name in names})
    requester = clients("user", "fleet")
    counts = Counter(served_by(requester.iq(COMPONENT)) for _ in range(60))
    assert counts == {name: 3 for name in names}


def test_sticky_moves_a_get_where_its_requester_goes_next(prosody, target, clients, proxy):
    """
    A get in flight at a resource that goes away is sent to the resource
    its requester sticks to from then on.
    """
    p, services = start(
        clients, proxy, target, "sticky", {name: {"delay": 1.0} for name in "abcde"}
    )
    requester = clients("user", "moving")
    requester.send("<iq type='get' id='moved' to=%s><q xmlns='urn:test'/></iq>" % quoteattr(COMPONENT))
    deadline = time.monotonic() + 10
    while not any(service.requests for service in services.values()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    (first,) = [name for name, service in services.items() if service.requests]
    services[first].kill()
    answer = requester.wait_for(lambda s: s.get("id") == "moved")
    assert served_by(answer) != first
    assert served_by(requester.iq(COMPONENT)) == served_by(answer)
