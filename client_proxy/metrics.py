"""
What the router reports as requests flow, for monitoring.

The router calls an L{IMetrics} at each event; L{NoMetrics} ignores them.
"""

from collections.abc import Callable
from weakref import WeakKeyDictionary

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from zope.interface import Interface, implementer

try:
    # What generate_latest writes, and what Prometheus of any version reads;
    # recent releases of prometheus_client make CONTENT_TYPE_LATEST 1.0.0.
    from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE
except ImportError:
    CONTENT_TYPE = CONTENT_TYPE_LATEST


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

    def requestRefused(reason: str) -> None:
        """
        A request was answered with an error by the component rather than
        forwarded: C{reason} is a short word of the component's own, such
        as C{domain_limit} (never a word a sender chose).
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

    def requestRefused(self, reason: str) -> None:
        pass


# Prometheus: the events of every proxy of the process, labelled by the
# proxy's JID, in one registry served at /metrics (see
# client_proxy.service.makeMetricsService).

#: The bounds of the answer-time histogram, in seconds: from a client on
#: the same machine to one answering at the default timeout.
ANSWER_TIME_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)

#: The defined conditions of RFC 6120, 8.3.3: an answer's C{condition}
#: label is one of them, or C{undefined-condition}, so that an implementing
#: client cannot make up labels without end.
STANZA_ERROR_CONDITIONS = frozenset(
    (
        "bad-request", "conflict", "feature-not-implemented", "forbidden", "gone",
        "internal-server-error", "item-not-found", "jid-malformed",
        "not-acceptable", "not-allowed", "not-authorized", "policy-violation",
        "recipient-unavailable", "redirect", "registration-required",
        "remote-server-not-found", "remote-server-timeout", "resource-constraint",
        "service-unavailable", "subscription-required", "undefined-condition",
        "unexpected-request",
    )
)


class _Families:
    """
    The metric families of one registry, shared by its proxies.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name, doc, labels=()):
            return Counter(name, doc, ["jid", *labels], registry=registry)

        def gauge(name, doc):
            return Gauge(name, doc, ["jid"], registry=registry)

        self.received = counter(
            "client_proxy_requests_received", "IQ requests (get, set) received from requesters."
        )
        self.forwarded = counter(
            "client_proxy_requests_forwarded", "Requests forwarded to a resource of the target."
        )
        self.retried = counter(
            "client_proxy_requests_retried",
            "Gets sent again to another resource, theirs having gone offline.",
        )
        self.timedOut = counter(
            "client_proxy_requests_timed_out", "Requests not answered in time."
        )
        self.answers = counter(
            "client_proxy_answers",
            "Answers sent to requesters, by type (result, error) and error condition "
            "(empty for a result), from the implementing client or the component.",
            ("type", "condition"),
        )
        self.dropped = counter(
            "client_proxy_stanzas_dropped",
            "Stanzas dropped rather than forwarded, by reason.",
            ("reason",),
        )
        self.refused = counter(
            "client_proxy_requests_refused",
            "Requests the component answered with an error instead of forwarding "
            "them, by reason.",
            ("reason",),
        )
        self.answerTime = Histogram(
            "client_proxy_answer_seconds",
            "Time the implementing client took to answer a request.",
            ["jid"],
            buckets=ANSWER_TIME_BUCKETS,
            registry=registry,
        )
        self.inFlight = gauge("client_proxy_requests_in_flight", "Requests awaiting an answer.")
        self.online = gauge(
            "client_proxy_resources_online", "Online resources of the target."
        )
        self.connected = gauge(
            "client_proxy_connected",
            "1 while the component connection is authenticated, 0 otherwise.",
        )


_families: "WeakKeyDictionary[CollectorRegistry, _Families]" = WeakKeyDictionary()


def _familiesOf(registry: CollectorRegistry) -> _Families:
    families = _families.get(registry)
    if families is None:
        families = _families[registry] = _Families(registry)
    return families


@implementer(IMetrics)
class PrometheusMetrics:
    """
    The metrics of one proxy, labelled C{jid}, in a Prometheus registry
    shared with the other proxies of the process.

    The counters are bound to the proxy's label once, here: each event
    costs one C{inc} or C{observe}. The gauges are read when scraped, from
    the callables given.

    @param jid: the proxy's JID, its label.
    @param registry: a L{prometheus_client.CollectorRegistry}.
    @param inFlight: returns the number of requests in flight.
    @param online: returns the number of online resources of the target.
    @param connected: returns whether the component connection is
        authenticated.
    """

    def __init__(
        self,
        jid: str,
        registry: CollectorRegistry,
        inFlight: Callable[[], int] = lambda: 0,
        online: Callable[[], int] = lambda: 0,
        connected: Callable[[], bool] = lambda: False,
    ) -> None:
        families = self._families = _familiesOf(registry)
        self.jid = jid
        self._answers: dict[tuple[str, str], Callable[[], None]] = {}
        self._dropped: dict[str, Callable[[], None]] = {}
        self._refused: dict[str, Callable[[], None]] = {}
        self.requestReceived = families.received.labels(jid).inc
        self.requestForwarded = families.forwarded.labels(jid).inc
        self.requestRetried = families.retried.labels(jid).inc
        self.requestTimedOut = families.timedOut.labels(jid).inc
        self.answerTime = families.answerTime.labels(jid).observe
        families.inFlight.labels(jid).set_function(inFlight)
        families.online.labels(jid).set_function(online)
        families.connected.labels(jid).set_function(lambda: 1 if connected() else 0)

    # requestReceived, requestForwarded, requestRetried, requestTimedOut and
    # answerTime are the bound methods of the children, set above.

    def answerSent(self, type: str, condition: str) -> None:
        try:
            inc = self._answers[type, condition]
        except KeyError:
            if condition and condition not in STANZA_ERROR_CONDITIONS:
                condition = "undefined-condition"
            inc = self._answers.get((type, condition))
            if inc is None:
                inc = self._answers[type, condition] = self._families.answers.labels(
                    self.jid, type, condition
                ).inc
        inc()

    def stanzaDropped(self, reason: str) -> None:
        self._byReason(self._dropped, self._families.dropped, reason)()

    def requestRefused(self, reason: str) -> None:
        self._byReason(self._refused, self._families.refused, reason)()

    def _byReason(
        self, bound: dict[str, Callable[[], None]], family: Counter, reason: str
    ) -> Callable[[], None]:
        """
        The C{inc} of C{family}'s child for this proxy and C{reason}, bound
        once per reason.
        """
        inc = bound.get(reason)
        if inc is None:
            inc = bound[reason] = family.labels(self.jid, reason).inc
        return inc


class MetricsResource(Resource):
    """
    The Prometheus text exposition of a registry, rendered in the reactor's
    thread (the gauges read the proxies' state) at each request. It has
    no children: anything below it is not found.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def getChild(self, path: bytes, request) -> Resource:
        return notFound()

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE.encode("ascii"))
        return generate_latest(self.registry)
