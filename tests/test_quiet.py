"""
Summaries of what remote senders cause, instead of a line each.
"""

from twisted.internet.task import Clock
from twisted.logger import Logger

from client_proxy.quiet import OTHER_DOMAINS, Tally


def tally(**kw):
    events = []
    log = Logger(observer=events.append)
    return Tally("proxy.example.org", Clock(), log, **kw), events


def test_nothing_logged_until_the_period_ends():
    t, events = tally()
    for i in range(5000):
        t.count("refused", "requests", "per-domain limit", "x%d@evil.example/r" % (i % 37))
    assert events == []
    t.clock.advance(60)
    assert len(events) == 1
    event = events[0]
    assert (event["count"], event["senders"], event["domain"], event["reason"]) == (
        5000,
        37,
        "evil.example",
        "per-domain limit",
    )
    assert event["event"] == "summary"


def test_no_timer_while_idle():
    t, events = tally()
    assert t.clock.getDelayedCalls() == []
    t.count("dropped", "answers", "unsolicited", "a@b.example/r")
    assert len(t.clock.getDelayedCalls()) == 1
    t.clock.advance(60)
    assert t.clock.getDelayedCalls() == []
    t.clock.advance(600)
    assert len(events) == 1


def test_lines_are_bounded_whatever_the_domains():
    t, events = tally(maxLines=3)
    for i in range(10_000):
        t.count("refused", "requests", "per-domain limit", "u@d%d.example/r" % i)
    t.clock.advance(60)
    assert len(events) == 4  # three groups, then one line for the rest
    assert sum(e["count"] for e in events) == 10_000


def test_memory_is_bounded():
    t, events = tally()
    t.maxGroups, t.maxSenders = 5, 10
    for i in range(1000):
        t.count("refused", "requests", "limit", "u%d@d%d.example/r" % (i, i))
    assert len(t._groups) == 6
    other = t._groups[("refused", "requests", "limit", OTHER_DOMAINS)]
    assert other.count == 995 and len(other.senders) == 10 and other.sendersCapped
    t.flush()
    assert any(e["capped"] == "+" for e in events)
