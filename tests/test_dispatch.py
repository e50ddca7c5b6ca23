"""
The dispatch strategies, on their own.
"""

from collections import Counter

import pytest
from zope.interface.verify import verifyObject

from client_proxy.dispatch import (
    STRATEGIES,
    IStrategy,
    LeastPendingStrategy,
    PriorityStrategy,
    RoundRobinStrategy,
    StickyStrategy,
)
from client_proxy.inflight import ForwardedSet, RequestTable
from client_proxy.presence import Resources

TARGET = "service@example.org"
A, B, C, D, E, F = (TARGET + "/" + name for name in "abcdef")
USER = "user@example.org/abc"
REQUESTERS = ["user%d@example.org/phone" % n for n in range(1000)]


def online(*resources: str, priority: int = 0) -> Resources:
    state = Resources()
    for resource in resources:
        state.available(resource, priority)
    return state


def table() -> RequestTable:
    return RequestTable(30.0, 100, 1000)


def test_every_strategy_is_registered():
    assert set(STRATEGIES) == {"random", "round-robin", "least-pending", "sticky", "priority"}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("count", range(1, 6))
def test_every_strategy_chooses_an_online_resource(name, count):
    resources = online(A, B, C, D, E)
    given = resources.online()[:count]
    strategy = STRATEGIES[name](resources, table())
    assert verifyObject(IStrategy, strategy)
    for requester in REQUESTERS[:20]:
        assert strategy.choose(given, requester) in given


def test_round_robin_gives_each_resource_its_exact_share():
    given = (A, B, C)
    strategy = RoundRobinStrategy(online(*given), table())
    assert Counter(strategy.choose(given, USER) for _ in range(30)) == {A: 10, B: 10, C: 10}


def test_round_robin_goes_on_when_resources_leave_and_join():
    strategy = RoundRobinStrategy(Resources(), table())
    assert [strategy.choose((A, B, C), USER) for _ in range(3)] == [A, B, C]
    assert [strategy.choose((A, B), USER) for _ in range(3)] == [A, B, A]
    assert [strategy.choose((A, B, C, D), USER) for _ in range(4)] == [B, C, D, A]


def test_least_pending_prefers_the_idle_resource():
    requests = table()
    strategy = LeastPendingStrategy(online(A, B, C), requests)
    requests.add(ForwardedSet(requester=USER, stanzaID="1", to="proxy", resource=A), 0)
    requests.add(ForwardedSet(requester=USER, stanzaID="2", to="proxy", resource=B), 0)
    requests.add(ForwardedSet(requester=USER, stanzaID="3", to="proxy", resource=B), 0)
    assert strategy.choose((A, B, C), USER) == C
    requests.add(ForwardedSet(requester=USER, stanzaID="4", to="proxy", resource=C), 0)
    assert strategy.choose((A, B, C), USER) in (A, C)


def test_least_pending_gives_less_to_a_slow_resource():
    """
    A answers every request at once, B never does: B gets one request, and
    then only A has none pending.
    """
    requests = table()
    strategy = LeastPendingStrategy(online(A, B), requests)
    chosen = []
    for n in range(20):
        resource = strategy.choose((A, B), USER)
        chosen.append(resource)
        request = requests.add(ForwardedSet(requester=USER, stanzaID=str(n), to="proxy", resource=resource), 0)
        if resource == A:
            requests.remove(request)
    assert Counter(chosen) == {A: 19, B: 1}


def test_least_pending_takes_turns_among_the_tied():
    strategy = LeastPendingStrategy(online(A, B, C), table())
    assert Counter(strategy.choose((A, B, C), USER) for _ in range(30)) == {A: 10, B: 10, C: 10}


def test_sticky_keeps_a_requester_on_its_resource():
    strategy = StickyStrategy(Resources(), table())
    first = {requester: strategy.choose((A, B, C), requester) for requester in REQUESTERS}
    again = {requester: strategy.choose((A, B, C), requester) for requester in REQUESTERS}
    assert first == again
    assert set(first.values()) == {A, B, C}


def test_sticky_is_stable_across_instances():
    """
    The hash is not Python's, which changes from one process to the next.
    """
    assert StickyStrategy(Resources(), table()).choose((A, B, C), USER) == StickyStrategy(
        Resources(), table()
    ).choose((A, B, C), USER)


def test_sticky_moves_only_the_requesters_of_a_resource_that_leaves():
    strategy = StickyStrategy(Resources(), table())
    before = {requester: strategy.choose((A, B, C, D, E), requester) for requester in REQUESTERS}
    after = {requester: strategy.choose((A, B, D, E), requester) for requester in REQUESTERS}
    moved = {requester for requester in REQUESTERS if before[requester] != after[requester]}
    assert moved == {requester for requester in REQUESTERS if before[requester] == C}
    assert 100 < len(moved) < 300, "about a fifth"


def test_sticky_moves_about_a_sixth_to_a_resource_that_joins():
    strategy = StickyStrategy(Resources(), table())
    before = {requester: strategy.choose((A, B, C, D, E), requester) for requester in REQUESTERS}
    after = {requester: strategy.choose((A, B, C, D, E, F), requester) for requester in REQUESTERS}
    moved = {requester for requester in REQUESTERS if before[requester] != after[requester]}
    assert all(after[requester] == F for requester in moved)
    assert 100 < len(moved) < 240, "about a sixth"


def test_priority_picks_the_highest():
    resources = online(A, B, C)
    resources.available(B, 5)
    strategy = PriorityStrategy(resources, table())
    assert {strategy.choose(resources.online(), USER) for _ in range(10)} == {B}


def test_priority_follows_changes():
    resources = online(A, B, C)
    strategy = PriorityStrategy(resources, table())
    resources.available(B, 5)
    assert strategy.choose(resources.online(), USER) == B
    resources.available(C, 10)
    assert strategy.choose(resources.online(), USER) == C
    resources.unavailable(C)
    assert strategy.choose(resources.online(), USER) == B


def test_priority_takes_turns_among_the_highest():
    resources = online(A, B, C, priority=1)
    resources.available(D, 0)
    strategy = PriorityStrategy(resources, table())
    chosen = Counter(strategy.choose(resources.online(), USER) for _ in range(30))
    assert chosen == {A: 10, B: 10, C: 10}


def test_priority_uses_a_negative_one_when_nothing_else_is_online():
    resources = online(A, B, priority=-1)
    resources.available(B, -5)
    strategy = PriorityStrategy(resources, table())
    assert strategy.choose(resources.online(), USER) == A
    resources.available(C, 0)
    assert strategy.choose(resources.online(), USER) == C
