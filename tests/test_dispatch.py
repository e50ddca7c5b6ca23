"""
The dispatch strategies, on their own: each one's promise, and the
structures they keep over the resources as they join and leave.
"""

import random
import tracemalloc
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zope.interface.verify import verifyObject

from client_proxy.dispatch import (
    STRATEGIES,
    IStrategy,
    LeastPendingStrategy,
    PriorityStrategy,
    RandomStrategy,
    RoundRobinStrategy,
    StickyStrategy,
)
from client_proxy.hashring import HashRing
from client_proxy.inflight import ForwardedSet, RequestTable
from client_proxy.presence import Resources

TARGET = "service@example.org"
A, B, C, D, E, F = (TARGET + "/" + name for name in "abcdef")
USER = "user@example.org/abc"
REQUESTERS = ["user%d@example.org/phone" % n for n in range(1000)]
NAMES = [TARGET + "/" + name for name in "abcdefgh"]


def online(*resources: str, priority: int = 0) -> Resources:
    state = Resources()
    for resource in resources:
        state.available(resource, priority)
    return state


def table() -> RequestTable:
    return RequestTable(30.0, 1000, 100000)


def sent(requests, resource, stanzaID):
    """A request of USER's now in flight at C{resource}."""
    request = ForwardedSet(requester=USER, stanzaID=stanzaID, to="proxy", resource=resource)
    return requests.add(request, now=0)


def build(name, *resources, requests=None, rng=None):
    """The strategy C{name} over C{resources}, and their set."""
    state = online(*resources)
    requests = table() if requests is None else requests
    if name == "random":
        return RandomStrategy(state, requests, rng or random.Random(1)), state
    return STRATEGIES[name](state, requests), state


def test_every_strategy_is_registered():
    assert set(STRATEGIES) == {"random", "round-robin", "least-pending", "sticky", "priority"}


# Every strategy


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_provides_the_interface(name):
    strategy, _ = build(name, A, B)
    assert verifyObject(IStrategy, strategy)


# A change: ("join", n, priority), ("leave", n), ("clear",), ("forget",),
# or a choice ("choose", requester, excluded n or None).
changes = st.lists(
    st.one_of(
        st.tuples(st.just("join"), st.integers(0, 7), st.integers(-1, 2)),
        st.tuples(st.just("leave"), st.integers(0, 7)),
        st.tuples(st.just("clear")),
        st.tuples(st.just("forget")),
        st.tuples(
            st.just("choose"), st.sampled_from(REQUESTERS[:5]), st.none() | st.integers(0, 7)
        ),
    ),
    max_size=60,
)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@given(changes=changes)
@settings(max_examples=60, deadline=None)
def test_every_strategy_chooses_among_its_resources(name, changes):
    """
    Whatever joins, leaves or changes priority, a choice is one of the
    resources online but the excluded one, and C{None} only when there is
    none.
    """
    strategy, resources = build(name)
    for change in changes:
        if change[0] == "join":
            resources.available(NAMES[change[1]], change[2])
        elif change[0] == "leave":
            resources.unavailable(NAMES[change[1]])
        elif change[0] in ("clear", "forget"):
            getattr(resources, change[0])()
        else:
            exclude = None if change[2] is None else NAMES[change[2]]
            candidates = set(resources.online()) - {exclude}
            chosen = strategy.choose(change[1], exclude)
            assert chosen in candidates if candidates else chosen is None


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_when_all_leave_at_once_none_is_chosen_in_between(name):
    """
    An observer told that a resource left (the router, moving its
    requests) can choose no resource that left with it.
    """
    strategy, resources = build(name, A, B, C)
    seen = []

    class Router:
        def resourceOnline(self, resource):
            pass

        def resourceOffline(self, resource):
            seen.append(strategy.choose(USER, exclude=resource))

    resources.addObserver(Router())
    resources.clear()
    assert seen == [None, None, None]
    resources.available(D)
    assert strategy.choose(USER) == D


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_strategy_built_late_knows_the_resources_online(name):
    strategy, resources = build(name, A, B)
    assert {strategy.choose(requester) for requester in REQUESTERS[:50]} <= {A, B}
    resources.unavailable(A)
    resources.unavailable(B)
    assert strategy.choose(USER) is None


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_no_memory_kept_per_requester(name):
    """
    Invented requesters, by the hundred thousand, cost nothing to keep.
    """
    strategy, _ = build(name, *NAMES)
    requesters = ["spam%d@example.net/x" % n for n in range(20000)]
    for requester in requesters[:1000]:
        strategy.choose(requester)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for requester in requesters:
            strategy.choose(requester)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 10000


# Random


def test_random_uses_every_resource_and_never_the_excluded():
    strategy, _ = build("random", A, B, C)
    assert {strategy.choose(USER) for _ in range(100)} == {A, B, C}
    assert {strategy.choose(USER, exclude=B) for _ in range(100)} == {A, C}
    assert Counter(strategy.choose(USER, exclude=C) for _ in range(3000))[A] in range(1300, 1700)


# Round-robin


@given(st.sets(st.sampled_from(NAMES), min_size=1), st.integers(1, 5))
def test_round_robin_gives_each_resource_its_exact_share(resources, rounds):
    strategy, _ = build("round-robin", *resources)
    chosen = Counter(strategy.choose(USER) for _ in range(len(resources) * rounds))
    assert chosen == {resource: rounds for resource in resources}


def test_round_robin_goes_on_when_resources_leave_and_join():
    strategy, resources = build("round-robin", A, B, C)
    assert [strategy.choose(USER) for _ in range(3)] == [A, B, C]
    resources.unavailable(C)
    assert [strategy.choose(USER) for _ in range(3)] == [A, B, A]
    resources.available(C)
    resources.available(D)
    assert [strategy.choose(USER) for _ in range(4)] == [B, A, C, D]


def test_round_robin_excluded_keeps_its_turn():
    strategy, _ = build("round-robin", A, B, C)
    assert strategy.choose(USER, exclude=A) == B
    assert [strategy.choose(USER) for _ in range(3)] == [A, C, B]


# Least-pending


def test_least_pending_prefers_the_idle_resource():
    requests = table()
    strategy, _ = build("least-pending", A, B, C, requests=requests)
    sent(requests, A, "1")
    sent(requests, B, "2")
    sent(requests, B, "3")
    assert strategy.choose(USER) == C
    sent(requests, C, "4")
    assert strategy.choose(USER) in (A, C)


def test_least_pending_gives_less_to_a_slow_resource():
    """
    A answers every request at once, B never does: B gets one request, and
    then only A has none pending.
    """
    requests = table()
    strategy, _ = build("least-pending", A, B, requests=requests)
    chosen = []
    for n in range(20):
        resource = strategy.choose(USER)
        chosen.append(resource)
        request = sent(requests, resource, str(n))
        if resource == A:
            requests.remove(request)
    assert Counter(chosen) == {A: 19, B: 1}


def test_least_pending_takes_turns_among_the_tied():
    strategy, _ = build("least-pending", A, B, C)
    assert Counter(strategy.choose(USER) for _ in range(30)) == {A: 10, B: 10, C: 10}


def test_least_pending_counts_what_a_resource_held_before_it_joined():
    """
    A resource that leaves the set with requests in flight (as a draining
    one would) and comes back is counted with them.
    """
    requests = table()
    strategy, resources = build("least-pending", A, B, requests=requests)
    resources.unavailable(A)
    sent(requests, A, "1")
    resources.available(A)
    assert {strategy.choose(USER) for _ in range(5)} == {B}


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(0, 4)),
            st.tuples(st.just("answer"), st.integers(0, 30)),
            st.tuples(st.just("move"), st.integers(0, 30), st.integers(0, 4)),
            st.tuples(st.just("leave"), st.integers(0, 4)),
            st.tuples(st.just("join"), st.integers(0, 4)),
            st.tuples(st.just("clear")),
            st.tuples(st.just("choose"), st.none() | st.integers(0, 4)),
        ),
        max_size=80,
    )
)
@settings(deadline=None)
def test_least_pending_chooses_the_fewest_and_takes_turns(changes):
    """
    The choice holds the fewest requests in flight of the resources but
    the excluded one; among those tied, a resource is chosen again only
    after the others, while nothing changes.
    """
    requests = table()
    strategy, resources = build("least-pending", *NAMES[:5], requests=requests)
    held = []
    sinceChange = []
    for n, change in enumerate(changes):
        kind = change[0]
        if kind == "add":
            held.append(sent(requests, NAMES[change[1]], str(n)))
        elif kind == "answer" and held:
            requests.remove(held.pop(change[1] % len(held)))
        elif kind == "move" and held:
            requests.move(held[change[1] % len(held)], NAMES[change[2]])
        elif kind == "leave":
            resources.unavailable(NAMES[change[1]])
        elif kind == "join":
            resources.available(NAMES[change[1]])
        elif kind == "clear":
            requests.clear()
            held.clear()
        elif kind == "choose":
            exclude = None if change[1] is None else NAMES[change[1]]
            candidates = [r for r in resources.online() if r != exclude]
            chosen = strategy.choose(USER, exclude)
            if not candidates:
                assert chosen is None
                continue
            fewest = min(requests.pendingAt(r) for r in candidates)
            assert requests.pendingAt(chosen) == fewest
            if exclude is None:
                tied = {r for r in candidates if requests.pendingAt(r) == fewest}
                assert chosen not in sinceChange or tied <= set(sinceChange)
            sinceChange.append(chosen)
            continue
        sinceChange = []


# Priority


def test_priority_picks_the_highest():
    strategy, resources = build("priority", A, B, C)
    resources.available(B, 5)
    assert {strategy.choose(USER) for _ in range(10)} == {B}


def test_priority_follows_changes():
    strategy, resources = build("priority", A, B, C)
    resources.available(B, 5)
    assert strategy.choose(USER) == B
    resources.available(C, 10)
    assert strategy.choose(USER) == C
    resources.unavailable(C)
    assert strategy.choose(USER) == B
    assert strategy.choose(USER, exclude=B) in (A,)


def test_priority_takes_turns_among_the_highest():
    resources = online(A, B, C, priority=1)
    resources.available(D, 0)
    strategy = PriorityStrategy(resources, table())
    chosen = Counter(strategy.choose(USER) for _ in range(30))
    assert chosen == {A: 10, B: 10, C: 10}


def test_priority_uses_a_negative_one_when_nothing_else_is_online():
    resources = online(A, B, priority=-1)
    resources.available(B, -5)
    strategy = PriorityStrategy(resources, table())
    assert strategy.choose(USER) == A
    assert strategy.choose(USER, exclude=A) == B
    resources.available(C, 0)
    assert strategy.choose(USER) == C


@given(
    st.lists(st.tuples(st.integers(0, 7), st.integers(-3, 3)), min_size=1),
    st.none() | st.integers(0, 7),
)
def test_priority_chooses_the_highest_in_turn(announced, excluded):
    strategy, resources = build("priority")
    for n, priority in announced:
        resources.available(NAMES[n], priority)
    exclude = None if excluded is None else NAMES[excluded]
    candidates = [r for r in resources.online() if r != exclude]
    if not candidates:
        assert strategy.choose(USER, exclude) is None
        return
    highest = max(resources.priority(r) for r in candidates)
    best = [r for r in candidates if resources.priority(r) == highest]
    chosen = Counter(strategy.choose(USER, exclude) for _ in range(2 * len(best)))
    assert chosen == {r: 2 for r in best}


# Sticky


def sticky(*resources):
    return build("sticky", *resources)[0]


def test_sticky_keeps_a_requester_on_its_resource():
    strategy = sticky(A, B, C)
    first = {requester: strategy.choose(requester) for requester in REQUESTERS}
    again = {requester: strategy.choose(requester) for requester in REQUESTERS}
    assert first == again
    assert set(first.values()) == {A, B, C}


def test_sticky_is_the_same_in_every_process():
    """
    The hash is not Python's, which changes from one process to the next:
    these choices were made by another process.
    """
    strategy = sticky(A, B, C, D, E)
    assert [strategy.choose(r) for r in REQUESTERS[:8]] == [B, E, A, D, B, B, B, C]


@given(st.permutations(NAMES))
@settings(max_examples=20, deadline=None)
def test_sticky_does_not_depend_on_the_order_resources_came_in(order):
    strategy = sticky(*order)
    reference = sticky(*NAMES)
    assert all(strategy.choose(r) == reference.choose(r) for r in REQUESTERS[:200])


@given(st.sets(st.sampled_from(NAMES), min_size=2), st.data())
@settings(max_examples=30, deadline=None)
def test_sticky_moves_only_the_requesters_of_a_resource_that_leaves(resources, data):
    leaving = data.draw(st.sampled_from(sorted(resources)))
    strategy, state = build("sticky", *resources)
    before = {requester: strategy.choose(requester) for requester in REQUESTERS}
    excluded = {requester: strategy.choose(requester, exclude=leaving) for requester in REQUESTERS}
    state.unavailable(leaving)
    after = {requester: strategy.choose(requester) for requester in REQUESTERS}
    assert after == excluded, "excluding is leaving, for one choice"
    moved = {requester for requester in REQUESTERS if before[requester] != after[requester]}
    assert moved == {requester for requester in REQUESTERS if before[requester] == leaving}


@given(st.sets(st.sampled_from(NAMES), min_size=1, max_size=7), st.data())
@settings(max_examples=30, deadline=None)
def test_sticky_moves_requesters_only_to_a_resource_that_joins(resources, data):
    joining = data.draw(st.sampled_from(sorted(set(NAMES) - resources)))
    strategy, state = build("sticky", *resources)
    before = {requester: strategy.choose(requester) for requester in REQUESTERS}
    state.available(joining)
    after = {requester: strategy.choose(requester) for requester in REQUESTERS}
    moved = {requester for requester in REQUESTERS if before[requester] != after[requester]}
    assert all(after[requester] == joining for requester in moved)


def test_sticky_moves_about_a_share_to_a_resource_that_joins():
    """
    A resource joining R others takes about 1/(R+1) of the requesters:
    over many joins, within a few percent, and never far off.
    """
    requesters = ["user%d@example.org/phone" % n for n in range(4000)]
    shares = []
    for n in range(20):
        others = ["%s/w%d-%d" % (TARGET, n, k) for k in range(5)]
        strategy, state = build("sticky", *others)
        before = [strategy.choose(r) for r in requesters]
        state.available("%s/joining%d" % (TARGET, n))
        after = [strategy.choose(r) for r in requesters]
        shares.append(sum(b != a for b, a in zip(before, after)) / len(requesters) * 6)
    assert 0.9 < sum(shares) / len(shares) < 1.1
    assert 0.4 < min(shares) and max(shares) < 1.6


@given(
    st.lists(st.sampled_from(NAMES), min_size=1, unique=True),
    st.lists(
        st.tuples(st.sampled_from(["join", "leave"]), st.sampled_from(NAMES), st.booleans()),
        max_size=12,
    ),
)
@settings(deadline=None)
def test_sticky_within_another_chooses_as_over_its_own_set(subset, changes):
    """
    A sticky strategy over a subset, reading its choices from the ring of
    a sticky strategy over the whole set while the subset is most of it
    (and from a ring of its own otherwise), chooses as a sticky strategy
    over the subset alone, whatever joins and leaves either set.
    """
    whole, part = online(*NAMES), online(*subset)
    requests = table()
    within = StickyStrategy(part, requests, within=StickyStrategy(whole, requests))
    alone = StickyStrategy(online(*subset), requests)
    alone_set = alone._set

    def check():
        for requester in REQUESTERS[:50]:
            for exclude in (None, *list(part.online())[:2]):
                assert within.choose(requester, exclude) == alone.choose(requester, exclude)

    check()
    for change, name, inPart in changes:
        # The part stays within the whole: it changes only with it.
        if change == "join":
            whole.available(name)
            if inPart:
                part.available(name)
                alone_set.available(name)
        else:
            part.unavailable(name)
            alone_set.unavailable(name)
            whole.unavailable(name)
        check()


# The ring under sticky, against the rule it implements


def ringModel(points, position, exclude):
    """
    The rule: the member of the first point at or after C{position},
    going round, points at one position ordered by their members' names.
    """
    ordered = sorted((p, m) for m, ps in points.items() if m != exclude for p in ps)
    after = [pm for pm in ordered if pm[0] >= position]
    return (after or ordered or [(None, None)])[0][1]


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.sampled_from("abcdefg"), st.sets(st.integers(0, 40), min_size=1, max_size=6)),
            st.tuples(st.just("remove"), st.sampled_from("abcdefg")),
        ),
        max_size=30,
    ),
    st.integers(0, 41),
    st.none() | st.sampled_from("abcdefg"),
)
@settings(deadline=None)
def test_ring_owner_follows_the_rule(changes, position, exclude):
    """
    In a tiny space of positions, where points of different members often
    share one, and in tiny chunks, which split often.
    """
    points = {}
    ring = HashRing(lambda member: points[member])
    ring.chunk = 3
    for change in changes:
        if change[0] == "add" and change[1] not in points:
            points[change[1]] = change[2]
            ring.add(change[1])
        elif change[0] == "remove" and change[1] in points:
            ring.remove(change[1])
            del points[change[1]]
        for p in range(0, 42, 7):
            assert ring.owner(p) == ringModel(points, p, None)
    assert ring.owner(position, exclude) == ringModel(points, position, exclude)


@given(
    st.dictionaries(
        st.sampled_from("abcdefg"), st.sets(st.integers(0, 8), min_size=1, max_size=4)
    ),
    st.sets(st.sampled_from("abcdefg")),
    st.integers(0, 9),
    st.none() | st.sampled_from("abcdefg"),
)
@settings(deadline=None, max_examples=500)
def test_ring_owner_among_a_subset_is_the_subsets_ring(points, subset, position, exclude):
    """
    Passing over the points of the members outside a subset gives the
    owner the ring of the subset alone would (shared positions included).
    """
    ring = HashRing(lambda member: points[member])
    ring.chunk = 3
    for member in points:
        ring.add(member)
    among = {m: ps for m, ps in points.items() if m in subset}
    assert ring.ownerAmong(position, subset.__contains__, exclude) == ringModel(
        among, position, exclude
    )
