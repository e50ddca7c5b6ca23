"""
The table of requests in flight.
"""

import pytest

from client_proxy.inflight import Refused, RequestTable


def table(timeout=30.0, perRequester=10, total=100):
    return RequestTable(timeout, perRequester, total)


def test_answer_takes_the_request():
    t = table()
    request = t.add("u@x/a", "1", "proxy.x", "s@x/r1", None, now=0)
    assert t.answer("u@x/a", "1", "s@x/r1") is request
    assert len(t) == 0
    assert t.answer("u@x/a", "1", "s@x/r1") is None, "a duplicate answer"


def test_same_id_from_two_requesters_never_collide():
    t = table()
    a = t.add("u@x/a", "1", "proxy.x", "s@x/r1", None, now=0)
    b = t.add("v@x/b", "1", "proxy.x", "s@x/r1", None, now=0)
    assert t.answer("v@x/b", "1", "s@x/r1") is b
    assert t.answer("u@x/a", "1", "s@x/r1") is a


def test_answer_from_another_resource_is_unsolicited():
    t = table()
    t.add("u@x/a", "1", "proxy.x", "s@x/r1", None, now=0)
    assert t.answer("u@x/a", "1", "s@x/r2") is None
    assert len(t) == 1


def test_same_id_twice_from_one_requester_is_refused():
    t = table()
    t.add("u@x/a", "1", "proxy.x", "s@x/r1", None, now=0)
    with pytest.raises(Refused) as e:
        t.add("u@x/a", "1", "proxy.x", "s@x/r1", None, now=0)
    assert e.value.condition == "conflict"


def test_limit_per_requester():
    t = table(perRequester=2)
    t.add("u@x/a", "1", "proxy.x", "s@x/r1", None, now=0)
    t.add("u@x/a", "2", "proxy.x", "s@x/r1", None, now=0)
    with pytest.raises(Refused) as e:
        t.add("u@x/a", "3", "proxy.x", "s@x/r1", None, now=0)
    assert (e.value.condition, e.value.errorType) == ("resource-constraint", "wait")
    t.add("v@x/b", "3", "proxy.x", "s@x/r1", None, now=0)
    t.answer("u@x/a", "1", "s@x/r1")
    t.add("u@x/a", "3", "proxy.x", "s@x/r1", None, now=0)


def test_limit_in_total():
    t = table(total=2)
    t.add("u@x/a", "1", "proxy.x", "s@x/r1", None, now=0)
    t.add("v@x/b", "1", "proxy.x", "s@x/r1", None, now=0)
    with pytest.raises(Refused):
        t.add("w@x/c", "1", "proxy.x", "s@x/r1", None, now=0)


def test_expiry_in_deadline_order():
    t = table(timeout=10)
    first = t.add("u@x/a", "1", "proxy.x", "s@x/r1", None, now=0)
    answered = t.add("u@x/a", "2", "proxy.x", "s@x/r1", None, now=1)
    second = t.add("u@x/a", "3", "proxy.x", "s@x/r1", None, now=2)
    t.answer("u@x/a", "2", "s@x/r1")
    assert t.nextDeadline() == 10
    assert t.expire(9.9) == []
    assert t.expire(10) == [first]
    assert t.expire(12) == [second]
    assert len(t) == 0
    assert t.nextDeadline() is None
    assert answered not in t.clear()


def test_held_by_and_move():
    t = table()
    a = t.add("u@x/a", "1", "proxy.x", "s@x/r1", "stanza", now=0)
    b = t.add("u@x/a", "2", "proxy.x", "s@x/r2", None, now=0)
    assert t.heldBy("s@x/r1") == [a]
    t.move(a, "s@x/r2")
    assert t.heldBy("s@x/r1") == []
    assert sorted(t.heldBy("s@x/r2"), key=lambda r: r.stanzaID) == [a, b]
    assert t.answer("u@x/a", "1", "s@x/r1") is None
    assert t.answer("u@x/a", "1", "s@x/r2") is a


def test_clear_returns_everything():
    t = table()
    a = t.add("u@x/a", "1", "proxy.x", "s@x/r1", None, now=0)
    assert t.clear() == [a]
    assert len(t) == 0
    assert t.heldBy("s@x/r1") == []
    t.add("u@x/a", "1", "proxy.x", "s@x/r1", None, now=0)


def test_table_does_not_grow_with_answered_requests():
    t = table(timeout=1, perRequester=10**6, total=10**6)
    for i in range(1000):
        t.add("u@x/a", str(i), "proxy.x", "s@x/r1", None, now=i)
        t.answer("u@x/a", str(i), "s@x/r1")
    assert len(t) == 0
    assert t._perRequester == {} and t._byResource == {}
    t.expire(10**4)
    assert len(t._deadlines) == 0


def test_answered_requests_do_not_pile_up_in_the_deadline_queue():
    t = table(timeout=3600, perRequester=10**6, total=10**6)
    for i in range(10000):
        request = t.add("u@x/a", str(i), "proxy.x", "s@x/r1", b"payload", now=0)
        t.answer("u@x/a", str(i), "s@x/r1")
        assert request.stanza is None, "the payload is let go at once"
    assert len(t._deadlines) <= 1024 + 2
    kept = t.add("u@x/a", "kept", "proxy.x", "s@x/r1", None, now=0)
    assert t.expire(3600) == [kept]
