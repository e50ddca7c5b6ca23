"""
What the router reports as requests flow, for monitoring.

The router calls an L{IMetrics} at each event; L{NoMetrics} ignores them.
"""

from zope.interface import Interface, implementer


class IMetrics(Interface):
    """
    Told of each event of a proxy's routing.
    """

    def requestReceived() -> None:
        """
        A requester sent an IQ get or set to the component.
        """

    def requestForwarded() -> None:
        """
        A request went to a resource of the target.
        """

    def requestRetried() -> None:
        """
        A get went again to another resource, its own having gone away.
        """

    def answerSent(type: str, condition: str) -> None:
        """
        A requester got its answer: C{type} is C{result} or C{error}, and
        C{condition} the error's defined condition (C{""} for a result),
        whether the implementing client answered or the component did.
        """

    def requestTimedOut() -> None:
        """
        A request got no answer in time.
        """

    def answerTime(seconds: float) -> None:
        """
        The implementing client answered a request after C{seconds}.
        """

    def stanzaDropped(reason: str) -> None:
        """
        A stanza was dropped, not forwarded: C{reason} is a short word,
        such as C{unsolicited}.
        """


@implementer(IMetrics)
class NoMetrics:
    """
    Metrics that go nowhere.
    """

    def requestReceived(self) -> None:
        pass

    def requestForwarded(self) -> None:
        pass

    def requestRetried(self) -> None:
        pass

    def answerSent(self, type: str, condition: str) -> None:
        pass

    def requestTimedOut(self) -> None:
        pass

    def answerTime(self, seconds: float) -> None:
        pass

    def stanzaDropped(self, reason: str) -> None:
        pass
