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
    """

    def __init__(
        self, resources: Resources, table: RequestTable, rng: random.Random | None = None
    ) -> None:
        self._choice = (rng or random.Random()).choice

    def choose(self, resources: tuple[str, ...], requester: str) -> str:
        return self._choice(resources)


STRATEGIES = {
    "random": RandomStrategy,
}
