"""
Choosing the resource of the target that serves a request.

A strategy is a small object with one method, L{IStrategy.choose}; it is
pure logic, told the online resources and the requester, so each one can be
tested on its own and a new one added without touching the router.
"""

import random

from zope.interface import Interface, implementer


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

    def __init__(self, rng: random.Random | None = None) -> None:
        self._choice = (rng or random.Random()).choice

    def choose(self, resources: tuple[str, ...], requester: str) -> str:
        return self._choice(resources)


STRATEGIES = {
    "random": RandomStrategy,
}
