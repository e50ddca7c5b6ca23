"""
The table of requests in flight.
"""

import pytest

from client_proxy.inflight import (
    ComponentQuery,
    ForwardedGet,
    ForwardedSet,
    OutboundRequest,
    Refused,
    RequestTable,
)


def table(timeout=30.0, perRequester=10, total=100):
    return RequestTable(timeout, perRequester, total)


def test_answer_takes_the_request():
    t = table()
    request = t.add(ForwardedSet(requester="u@x/a", stanzaID="1", to="proxy.x", resource="s@x/r1"), now=0)
    assert t.answer("u@x/a", "1", "s@x/r1") is request
    assert len(t) == 0
    assert t.answer("u@x/a", "1", "s@x/r1") is None, "a duplicate answer"


def test_same_id_from_two_requesters_never_collide():
    t = table()
    a = t.add(ForwardedSet(requester="u@x/a", stanzaID="1", to="proxy.x", resource="s@x/r1"), now=0)
    b = t.add(ForwardedSet(requester="v@x/b", stanzaID="1", to="proxy.x", resource="s@x/r1"), now=0)
    assert t.answer("v@x/b", "1", "s@x/r1") is b
    assert t.answer("u@x/a", "1", "s@x/r1") is a


def test_answer_from_another_resource_is_unsolicited():
    t = table()
    t.add(ForwardedSet(requester="u@x/a", stanzaID="1", to="proxy.x", resource="s@x/r1"), now=0)
    assert t.answer("u@x/a", "1", "s@x/r2") is None
    assert len(t) == 1


def test_same_id_twice_from_one_requester_is_refused():
    t = table()
    t.add(ForwardedSet(requester="u@x/a", stanzaID="1", to="proxy.x", resource="s@x/r1"), now=0)
    with pytest.raises(Refused) as e:
        t.add(ForwardedSet(requester="u@x/a", stanzaID="1", to="proxy.x", resource="s@x/r1"), now=0)
    assert e.value.condition == "conflict"


def test_limit_per_requester():
    t = table(perRequester=2)
    t.add(ForwardedSet(requester="u@x/a", stanzaID="1", to="proxy.x", resource="s@x/r1"), now=0)
    t.add(ForwardedSet(requester="u@x/a", stanzaID="2", to="proxy.x", resource="s@x/r1"), now=0)
    with pytest.raises(Refused) as e:
        t.add(ForwardedSet(requester="u@x/a", stanzaID="3", to="proxy.x", resource="s@x/r1"), now=0)
    assert (e.value.condition, e.value.errorType) == ("resource-constraint", "wait")
    t.add(ForwardedSet(requester="v@x/b", stanzaID="3", to="proxy.x", resource="s@x/r1"), now=0)
    t.answer("u@x/a", "1", "s@x/r1")
    t.add(ForwardedSet(requester="u@x/a", stanzaID="3", to="proxy.x", resource="s@x/r1"), now=0)


def test_limit_in_total():
    t = RequestTable(30.0, 10, 2, maxPerDomain=2)
    t.add(ForwardedSet(requester="u@x/a", stanzaID="1", to="proxy.x", resource="s@x/r1"), now=0)
    t.add(ForwardedSet(requester="v@y/b", stanzaID="1", to="proxy.x", resource="s@x/r1"), now=0)
    with pytest.raises(Refused) as refused:
        t.add(ForwardedSet(requester="w@z/c", stanzaID="1", to="proxy.x", resource="s@x/r1"), now=0)
    assert refused.value.reason == "total_limit"


def test_expiry_in_deadline_order():
    t = table(timeout=10)
    first = t.add(ForwardedSet(requester="u@x/a", stanzaID="1", to="proxy.x", resource="s@x/r1"), now=0)
    answered = t.add(ForwardedSet(requester="u@x/a", stanzaID="2", to="proxy.x", resource="s@x/r1"), now=1)
    second = t.add(ForwardedSet(requester="u@x/a", stanzaID="3", to="proxy.x", resource="s@x/r1"), now=2)
    t.answer("u@x/a", "2", "s@x/r1")
    assert t.nextDeadline() == 10
    assert t.expire(9.9) == []
    assert t.expire(10) == [first]
    assert t.expire(12) == [second]
    assert len(t) == 0
    assert t.nextDeadline() is None
    assert answered not in t.clear()


def test_a_new_timeout_moves_every_deadline_in_order():
    t = table(timeout=30)
    first = t.add(ForwardedSet(requester="u@x/a", stanzaID="1", to="proxy.x", resource="s@x/r1"), now=0)
    second = t.add(ForwardedSet(requester="u@x/a", stanzaID="2", to="proxy.x", resource="s@x/r1"), now=5)
    t.setTimeout(10)
    third = t.add(ForwardedSet(requester="u@x/a", stanzaID="3", to="proxy.x", resource="s@x/r1"), now=6)
    assert [r.deadline for r in (first, second, third)] == [10, 15, 16]
    assert t.nextDeadline() == 10
    assert t.expire(15) == [first, second]


def test_held_by_and_move():
    t = table()
    a = t.add(ForwardedGet(requester="u@x/a", stanzaID="1", to="proxy.x", resource="s@x/r1", stanza=b"stanza"), now=0)
    b = t.add(ForwardedSet(requester="u@x/a", stanzaID="2", to="proxy.x", resource="s@x/r2"), now=0)
    assert t.heldBy("s@x/r1") == [a]
    t.move(a, "s@x/r2")
    assert t.heldBy("s@x/r1") == []
    assert sorted(t.heldBy("s@x/r2"), key=lambda r: r.stanzaID) == [a, b]
    assert t.answer("u@x/a", "1", "s@x/r1") is None
    assert t.answer("u@x/a", "1", "s@x/r2") is a


def test_clear_returns_everything():
    t = table()
    a = t.add(ForwardedSet(requester="u@x/a", stanzaID="1", to="proxy.x", resource="s@x/r1"), now=0)
    assert t.clear() == [a]
    assert len(t) == 0
    assert t.heldBy("s@x/r1") == []
    t.add(ForwardedSet(requester="u@x/a", stanzaID="1", to="proxy.x", resource="s@x/r1"), now=0)


def test_table_does_not_grow_with_answered_requests():
    t = table(timeout=1, perRequester=10**6, total=10**6)
    for i in range(1000):
        t.add(ForwardedSet(requester="u@x/a", stanzaID=str(i), to="proxy.x", resource="s@x/r1"), now=i)
        t.answer("u@x/a", str(i), "s@x/r1")
    assert len(t) == 0
    assert t._perRequester == {} and t._byResource == {}
    t.expire(10**4)
    assert len(t._deadlines) == 0


def test_answered_requests_do_not_pile_up_in_the_deadline_queue():
    t = table(timeout=3600, perRequester=10**6, total=10**6)
    for i in range(10000):
        request = t.add(ForwardedGet(requester="u@x/a", stanzaID=str(i), to="proxy.x", resource="s@x/r1", stanza=b"payload"), now=0)
        t.answer("u@x/a", str(i), "s@x/r1")
        assert request.stanza == b"", "the payload is let go at once"
    assert len(t._deadlines) <= 1024 + 2
    kept = t.add(ForwardedSet(requester="u@x/a", stanzaID="kept", to="proxy.x", resource="s@x/r1"), now=0)
    assert t.expire(3600) == [kept]


def _add(t, requester, stanzaID="1", stanza=None):
    addresses = dict(requester=requester, stanzaID=stanzaID, to="proxy.x", resource="s@x/r1")
    request = ForwardedSet(**addresses) if stanza is None else ForwardedGet(stanza=stanza, **addresses)
    return t.add(request, now=0)


def test_a_requester_is_its_bare_jid():
    """Inventing resources does not give a user more room."""
    t = table(perRequester=2)
    _add(t, "u@x/a")
    _add(t, "u@x/b")
    with pytest.raises(Refused) as refused:
        _add(t, "u@x/c")
    assert refused.value.reason == "requester_limit"
    _add(t, "v@x/a")


def test_a_domain_has_a_share():
    """A domain's users together hold at most their share of the table."""
    t = RequestTable(30.0, 10, 8)
    assert t.maxPerDomain == 2
    _add(t, "a@evil/r")
    _add(t, "b@evil/r")
    with pytest.raises(Refused) as refused:
        _add(t, "c@evil/r")
    assert (refused.value.condition, refused.value.errorType, refused.value.reason) == (
        "resource-constraint", "wait", "domain_limit",
    )
    _add(t, "a@good/r")
    t.answer("a@evil/r", "1", "s@x/r1")
    _add(t, "c@evil/r")


def test_retained_bytes_are_bounded():
    t = RequestTable(30.0, 10, 100, maxRetainedBytes=10)
    kept = _add(t, "u@x/a", "1", b"123456")
    with pytest.raises(Refused) as refused:
        _add(t, "u@x/a", "2", b"123456")
    assert refused.value.reason == "retained_bytes"
    _add(t, "u@x/a", "3")  # a set keeps nothing
    assert t.retainedBytes == 6
    t.remove(kept)
    assert t.retainedBytes == 0
    _add(t, "u@x/a", "2", b"1234567890")


def test_an_outbound_request_is_answered_by_its_alias():
    t = table()
    request = t.add(
        OutboundRequest(requester="s@x/r1", stanzaID="own", to="proxy.x/u@y", resource="u@y", alias="a1"),
        now=0,
    )
    assert t.answerAlias("a1", "v@y/z") is None, "not from where it went"
    assert t.answerAlias("a1", "u@y/phone") is request, "the bare JID's resource answers"
    assert len(t) == 0 and t.answerAlias("a1", "u@y") is None


def _query(t, stanzaID, timeout, now, answered=None):
    return t.add(
        ComponentQuery(
            requester="proxy.x", stanzaID=stanzaID, to="proxy.x", resource="s@x/r1",
            timeout=timeout, answered=answered or (lambda inner: None),
        ),
        now=now,
    )


def test_a_request_with_a_timeout_of_its_own():
    """
    The component's own requests expire after their own timeout, before
    requests that came earlier with the table's: deadlines no longer grow
    in insertion order over all requests, but they do per timeout.
    """
    t = table(timeout=30)
    early = t.add(ForwardedSet(requester="u@x/a", stanzaID="1", to="proxy.x", resource="s@x/r1"), now=0)
    query = _query(t, "q", 10, 5)
    late = t.add(ForwardedSet(requester="u@x/a", stanzaID="2", to="proxy.x", resource="s@x/r1"), now=6)
    assert len(t) == 3 and t.pendingAt("s@x/r1") == 3
    assert t.nextDeadline() == 15
    assert t.expire(14.9) == []
    assert t.expire(15) == [query]
    assert t.nextDeadline() == 30
    assert t.expire(100) == [early, late]
    assert t.nextDeadline() is None


def test_expired_requests_of_both_kinds_come_in_deadline_order():
    t = table(timeout=30)
    a = t.add(ForwardedSet(requester="u@x/a", stanzaID="1", to="proxy.x", resource="s@x/r1"), now=0)
    q = _query(t, "q", 10, 25)
    assert t.expire(40) == [a, q]


def test_own_requests_count_and_answer_like_others():
    t = table(timeout=30, perRequester=1)
    query = _query(t, "q", 10, 0)
    with pytest.raises(Refused):
        _query(t, "r", 10, 0)
    assert t.answered("proxy.x", "q", "s@x/r2") is None
    assert t.answer("proxy.x", "q", "s@x/r1") is query
    assert t.nextDeadline() is None


def test_answered_own_requests_do_not_pile_up():
    t = table(timeout=30, perRequester=10**6, total=10**6)
    for i in range(5000):
        _query(t, str(i), 10, 0)
        t.answer("proxy.x", str(i), "s@x/r1")
    t.add(ForwardedSet(requester="u@x/a", stanzaID="x", to="proxy.x", resource="s@x/r1"), now=0)
    assert sum(len(queue) for queue in t._queues.values()) <= 1024 + 2
    t.clear()
    assert t._queues == {}
