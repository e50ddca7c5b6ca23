"""
What the router reports as requests flow, for monitoring.

The router calls an L{IMetrics} at each event; L{NoMetrics} ignores them,
and L{client_proxy.prometheus.PrometheusMetrics} counts them (it needs
C{prometheus_client}, the C{metrics} extra; this module needs nothing).

The requests of the two directions are counted apart: those that
requesters send to the component (L{IMetrics.requestReceived}, answered
by L{IMetrics.answerSent}), and those that the target's resources send
out through it (L{IMetrics.outboundRequestReceived}, answered by
L{IMetrics.outboundAnswerSent}). Each request of either kind gets one
answer, so the answers counted add up with the requests counted, less
those in flight and the few whose answer could not be sent at all (an
error larger than the server accepts, counted as dropped C{too_large}).
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

    def outboundRequestReceived() -> None:
        """
        A resource of the target sent a get or set through the component,
        to go on to someone else.
        """

    def outboundAnswerSent(type: str, condition: str) -> None:
        """
        A resource of the target got the answer to a request it sent out,
        from its recipient or from the component; C{type} and C{condition}
        as for L{answerSent}.
        """

    def requestTimedOut() -> None:
        """
        A requester's request got no answer in time from the implementing
        client.
        """

    def answerTime(seconds: float) -> None:
        """
        The implementing client answered a requester's request after
        C{seconds}.
        """

    def stanzaDropped(reason: str) -> None:
        """
        A stanza was dropped, not forwarded: C{reason} is a short word,
        such as C{unsolicited}.
        """

    def requestRefused(reason: str) -> None:
        """
        A request (of either direction) was answered with an error by the
        component rather than forwarded: C{reason} is a short word of the component's own, such
        as C{domain_limit} (never a word a sender chose).
        """

    def retire() -> None:
        """
        The proxy is gone for good (a reload removed it): its metrics go,
        so that nothing counts it any more.
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

    def outboundRequestReceived(self) -> None:
        pass

    def outboundAnswerSent(self, type: str, condition: str) -> None:
        pass

    def requestTimedOut(self) -> None:
        pass

    def answerTime(self, seconds: float) -> None:
        pass

    def stanzaDropped(self, reason: str) -> None:
        pass

    def requestRefused(self, reason: str) -> None:
        pass

    def retire(self) -> None:
        pass
