"""
Choosing the resource of the target that serves a request.

A strategy is a small object with one method for the routers,
L{IStrategy.choose}. It chooses among a set of resources (an
L{IResourceSet}: the target's online resources), over which it keeps a
structure of its own, updated as an L{IResourceIndex} at each change of the
set, so that a choice costs O(1) or O(log R) for R resources, and so does a
change. A structure over another set (the resources eligible for a
request, say) is the same strategy built over that set. Each strategy
class is built with the set and the L{RequestTable} (for the requests each
resource holds), and registered by name in L{STRATEGIES}.
"""

import random
from abc import ABC, abstractmethod
from bisect import bisect_left, insort
from collections import OrderedDict
from collections.abc import Callable
from hashlib import blake2b

from zope.interface import implementer

from client_proxy.hashring import HashRing, shakePositions
from client_proxy.inflight import RequestTable
from client_proxy.presence import IResourceIndex, IResourceSet


class IStrategy(IResourceIndex):
    """
    Picks one resource of its set for a request.
    """

    def choose(requester: str, exclude: str | None = None) -> str | None:
        """
        A resource of the set, other than C{exclude}, to serve
        C{requester}; C{None} when there is none.

        C{exclude} is the resource a request is taken from (one that
        bounced it or went away): the choice is the one the strategy would
        make without it.
        """

    def close() -> None:
        """
        The strategy is no longer used, nor its set: stop following
        anything else (the table of requests in flight).
        """


@implementer(IResourceIndex)
class _Strategy(ABC):
    """
    What every strategy shares: built empty by L{forgotten}, then told of
    each resource already in the set, then of every change.
    """

    def __init__(self, resources: IResourceSet, table: RequestTable) -> None:
        self.forgotten()
        for resource in resources.online():
            self.resourceOnline(resource)
        resources.addObserver(self)

    @abstractmethod
    def forgotten(self) -> None: ...

    @abstractmethod
    def resourceOnline(self, resource: str) -> None: ...

    @abstractmethod
    def resourceOffline(self, resource: str) -> None: ...

    def priorityChanged(self, resource: str) -> None:
        pass

    def close(self) -> None:
        pass


@implementer(IStrategy)
class RandomStrategy(_Strategy):
    """
    A uniformly random resource, as mod_client_proxy does.

    The default: no assumption about the resources, and the load evens out
    over many requests. The resources are kept in a list, where one that
    leaves gives its place to the last one.
    """

    def __init__(
        self, resources: IResourceSet, table: RequestTable, rng: random.Random | None = None
    ) -> None:
        self._randrange = (rng or random.Random()).randrange
        super().__init__(resources, table)

    def forgotten(self) -> None:
        self._resources: list[str] = []
        self._positions: dict[str, int] = {}

    def resourceOnline(self, resource: str) -> None:
        self._positions[resource] = len(self._resources)
        self._resources.append(resource)

    def resourceOffline(self, resource: str) -> None:
        position = self._positions.pop(resource)
        last = self._resources.pop()
        if last != resource:
            self._resources[position] = last
            self._positions[last] = position

    def choose(self, requester: str, exclude: str | None = None) -> str | None:
        skipped = self._positions.get(exclude) if exclude is not None else None
        count = len(self._resources) - (skipped is not None)
        if not count:
            return None
        position = self._randrange(count)
        if skipped is not None and position >= skipped:
            position += 1
        return self._resources[position]


class _Turns:
    """
    Resources by rank, taking turns: L{take} gives the first resource of
    the highest rank and puts it last among those of its rank. A resource
    that gets another rank goes last among those of its new one.

    The ranks that some resource has are kept sorted; they are few (at
    most 256 presence priorities, or a few hundred counts of requests in
    flight, see L{LeastPendingStrategy}), so every operation is O(1) but
    for a bisection among them.
    """

    def __init__(self) -> None:
        self._rankOf: dict[str, int] = {}
        self._byRank: dict[int, OrderedDict[str, None]] = {}
        self._ranks: list[int] = []

    def add(self, resource: str, rank: int) -> None:
        """
        C{resource}, new here, has C{rank}: it goes last of that rank.
        """
        self._rankOf[resource] = rank
        turns = self._byRank.get(rank)
        if turns is None:
            turns = self._byRank[rank] = OrderedDict()
            insort(self._ranks, rank)
        turns[resource] = None

    def rerank(self, resource: str, rank: int) -> None:
        """
        C{resource}, if it is here, has C{rank} now; no change if it had it
        already.
        """
        old = self._rankOf.get(resource)
        if old is not None and old != rank:
            self._leave(resource, old)
            self.add(resource, rank)

    def remove(self, resource: str) -> None:
        self._leave(resource, self._rankOf.pop(resource))

    def _leave(self, resource: str, rank: int) -> None:
        turns = self._byRank[rank]
        del turns[resource]
        if not turns:
            del self._byRank[rank]
            del self._ranks[bisect_left(self._ranks, rank)]

    def take(self, exclude: str | None = None) -> str | None:
        """
        The first resource but C{exclude} of the highest rank that has
        one, now last of its rank; C{None} if there is none.
        """
        for rank in reversed(self._ranks[-2:]):
            turns = self._byRank[rank]
            for resource in turns:
                if resource != exclude:
                    turns.move_to_end(resource)
                    return resource
        return None


class _TurnsStrategy(_Strategy):
    """
    A strategy that takes turns among the resources of the highest
    L{rank}.
    """

    def forgotten(self) -> None:
        self._turns = _Turns()

    @abstractmethod
    def rank(self, resource: str) -> int: ...

    def resourceOnline(self, resource: str) -> None:
        self._turns.add(resource, self.rank(resource))

    def resourceOffline(self, resource: str) -> None:
        self._turns.remove(resource)

    def choose(self, requester: str, exclude: str | None = None) -> str | None:
        return self._turns.take(exclude)


@implementer(IStrategy)
class RoundRobinStrategy(_TurnsStrategy):
    """
    Each resource in turn: N resources get exactly one request in N each
    while none joins or leaves; one that joins takes its first turn after
    those already there.

    For resources that are alike and answer about as fast, when the load
    should be spread exactly evenly.
    """

    def rank(self, resource: str) -> int:
        return 0


@implementer(IStrategy)
class LeastPendingStrategy(_TurnsStrategy):
    """
    The resource with the fewest requests in flight, taking turns among
    those tied.

    For resources of uneven speed or load: a slow or busy resource holds
    more requests and so gets fewer new ones.

    The table tells the strategy of every change of a resource's count.
    Resources with k different counts hold at least 0 + 1 + ... + (k - 1)
    requests between them, so with at most 100,000 requests in flight
    there are at most 447 ranks.
    """

    def __init__(self, resources: IResourceSet, table: RequestTable) -> None:
        self._table = table
        self._pendingAt = table.pendingAt
        super().__init__(resources, table)
        table.observePending(self.pendingChanged)

    def close(self) -> None:
        self._table.unobservePending(self.pendingChanged)

    def rank(self, resource: str) -> int:
        return -self._pendingAt(resource)

    def pendingChanged(self, resource: str, count: int) -> None:
        """
        C{resource} holds C{count} requests in flight now.
        """
        self._turns.rerank(resource, -count)


@implementer(IStrategy)
class PriorityStrategy(_TurnsStrategy):
    """
    The resources with the highest presence priority, in turn; the others
    serve only when none of those is online, even those with a negative
    priority.

    For a main resource and standbys: the implementing clients pick who
    serves by the priority they announce, and can change it at any time.
    """

    def __init__(self, resources: IResourceSet, table: RequestTable) -> None:
        self._priority = resources.priority
        super().__init__(resources, table)

    def rank(self, resource: str) -> int:
        return self._priority(resource)

    def priorityChanged(self, resource: str) -> None:
        self._turns.rerank(resource, self.rank(resource))


@implementer(IStrategy)
class StickyStrategy(_Strategy):
    """
    The same resource for a requester as long as that resource is online,
    by consistent hashing of the requester and the resources on a ring:
    a resource that leaves moves only its own requesters, and one that
    joins takes only about 1/(R+1) of them. Every process makes the same
    choice for the same resources.

    For implementing clients that keep state per requester (a session, a
    cache) that they do not share with one another.

    @ivar points: how many points each resource has on the ring: with
        more, the requesters spread more evenly (each resource's share
        varies by about 1/sqrt(points)), and joining and leaving cost more.
    """

    points = 24

    def __init__(
        self,
        resources: IResourceSet,
        table: RequestTable,
        within: "StickyStrategy | None" = None,
    ) -> None:
        """
        @param within: a sticky strategy over a set that holds every
            resource of C{resources}: while C{resources} are most of that
            set, choices are read from its ring (L{HashRing.ownerAmong}),
            and a resource joining or leaving costs nothing here; when
            they are a quarter of it or fewer, from a ring of their own,
            kept until they are half of it again.
        """
        self._within = within
        self._set = resources
        super().__init__(resources, table)

    def forgotten(self) -> None:
        self._ring: HashRing | None = (
            HashRing(shakePositions(self.points)) if self._within is None else None
        )

    def resourceOnline(self, resource: str) -> None:
        if self._ring is not None:
            self._ring.add(resource)

    def resourceOffline(self, resource: str) -> None:
        if self._ring is not None:
            self._ring.remove(resource)

    def choose(self, requester: str, exclude: str | None = None) -> str | None:
        position = int.from_bytes(
            blake2b(requester.encode("utf-8"), digest_size=8).digest(), "big"
        )
        ring = self._ring if self._within is None else self._subsetRing()
        if ring is not None:
            return ring.owner(position, exclude)
        assert self._within is not None and self._within._ring is not None
        return self._within._ring.ownerAmong(position, self._set.online().__contains__, exclude)

    def _subsetRing(self) -> HashRing | None:
        """
        The ring of this set's own, if it should have one now (see
        L{__init__}); C{None} to read the ring of the set it is within.
        The same points either way, so no requester moves when this
        changes.
        """
        assert self._within is not None and self._within._ring is not None
        members, around = len(self._set.online()), len(self._within._ring)
        if self._ring is None and members * 4 < around:
            self._ring = HashRing(shakePositions(self.points))
            for resource in self._set.online():
                self._ring.add(resource)
        elif self._ring is not None and members * 2 >= around:
            self._ring = None
        return self._ring


STRATEGIES: dict[str, Callable[[IResourceSet, RequestTable], IStrategy]] = {
    "random": RandomStrategy,
    "round-robin": RoundRobinStrategy,
    "least-pending": LeastPendingStrategy,
    "priority": PriorityStrategy,
    "sticky": StickyStrategy,
}
