"""
Choosing the resource of the target that serves a request.

A strategy is a small object with one method, L{IStrategy.choose}; it is
pure logic, told the online resources and the requester, so each one can be
tested on its own and a new one added without touching the router. Every
strategy class is built with the target's L{Resources} (for presence
priorities) and the L{RequestTable} (for the requests each resource holds),
and registered by name in L{STRATEGIES}.
"""

import random
from collections.abc import Callable, Sequence
from hashlib import blake2b

from zope.interface import Interface, implementer

from client_proxy.inflight import RequestTable
from client_proxy.presence import Resources


class IStrategy(Interface):
    """
    Picks one online resource of the target for a request.
    """

    def choose(resources: tuple[str, ...], requester: str) -> str:
        """
        Return one of C{resources} (never empty) to serve C{requester}.
        """


@implementer(IStrategy)
class RandomStrategy:
    """
    A uniformly random resource, as mod_client_proxy does.

    The default: no state and no assumption about the resources, and the
    load evens out over many requests.
    """

    def __init__(
        self, resources: Resources, table: RequestTable, rng: random.Random | None = None
    ) -> None:
        self._choice = (rng or random.Random()).choice

    def choose(self, resources: tuple[str, ...], requester: str) -> str:
        return self._choice(resources)


def _best(resources: tuple[str, ...], score: Callable[[str], int]) -> list[int]:
    """
    The positions in C{resources} of those with the highest C{score}.
    """
    scores = [score(resource) for resource in resources]
    highest = max(scores)
    return [position for position, s in enumerate(scores) if s == highest]


class _Turns:
    """
    Takes turns among candidates: each time the first one after the
    position taken last time in the online resources, wrapping around, so
    candidates share the load evenly even when the candidates or the
    resources change between two requests.
    """

    def __init__(self) -> None:
        self._last = -1

    def take(self, resources: tuple[str, ...], candidates: Sequence[int]) -> str:
        """
        The turn among C{candidates}, positions in C{resources} (not empty).
        """
        self._last = next(
            (position for position in candidates if position > self._last),
            candidates[0],
        )
        return resources[self._last]


@implementer(IStrategy)
class RoundRobinStrategy:
    """
    Each online resource in turn, in the order they came online: N
    resources get exactly one request in N each while none joins or leaves.

    For resources that are alike and answer about as fast, when the load
    should be spread exactly evenly.
    """

    def __init__(self, resources: Resources, table: RequestTable) -> None:
        self._turns = _Turns()

    def choose(self, resources: tuple[str, ...], requester: str) -> str:
        return self._turns.take(resources, range(len(resources)))


@implementer(IStrategy)
class LeastPendingStrategy:
    """
    The resource with the fewest requests in flight, taking turns among
    those tied.

    For resources of uneven speed or load: a slow or busy resource holds
    more requests and so gets fewer new ones.
    """

    def __init__(self, resources: Resources, table: RequestTable) -> None:
        self._pendingAt = table.pendingAt
        self._turns = _Turns()

    def choose(self, resources: tuple[str, ...], requester: str) -> str:
        pendingAt = self._pendingAt
        return self._turns.take(
            resources, _best(resources, lambda resource: -pendingAt(resource))
        )


@implementer(IStrategy)
class PriorityStrategy:
    """
    The resources with the highest presence priority, in turn; the others
    serve only when none of those is online, even those with a negative
    priority.

    For a main resource and standbys: the implementing clients pick who
    serves by the priority they announce, and can change it at any time.
    """

    def __init__(self, resources: Resources, table: RequestTable) -> None:
        self._priority = resources.priority
        self._turns = _Turns()

    def choose(self, resources: tuple[str, ...], requester: str) -> str:
        return self._turns.take(resources, _best(resources, self._priority))


@implementer(IStrategy)
class StickyStrategy:
    """
    The same resource for a requester as long as that resource is online,
    by rendezvous (highest random weight) hashing of the requester and each
    resource: a resource that joins or leaves moves only its share of the
    requesters.

    For implementing clients that keep state per requester (a session, a
    cache) that they do not share with one another.
    """

    def __init__(self, resources: Resources, table: RequestTable) -> None:
        pass

    def choose(self, resources: tuple[str, ...], requester: str) -> str:
        # A stable hash, the same in every process (unlike hash()); NUL
        # cannot occur in a JID, so the pair is unambiguous.
        return max(
            resources,
            key=lambda resource: blake2b(
                f"{requester}\0{resource}".encode(), digest_size=8
            ).digest(),
        )


STRATEGIES: dict[str, Callable[[Resources, RequestTable], IStrategy]] = {
    "random": RandomStrategy,
    "round-robin": RoundRobinStrategy,
    "least-pending": LeastPendingStrategy,
    "priority": PriorityStrategy,
    "sticky": StickyStrategy,
}
