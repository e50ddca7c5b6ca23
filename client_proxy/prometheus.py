"""
The metrics of the proxies in Prometheus form, and the resources that serve
them over HTTP: C{/metrics} and C{/healthz} (see
L{client_proxy.service.makeMetricsService}).

This module needs C{prometheus_client}, the C{metrics} extra
(C{pip install client-proxy[metrics]}); nothing else imports it unless
metrics are asked for.
"""

import json
import platform
from collections.abc import Callable
from weakref import WeakKeyDictionary

import twisted
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)
from twisted.web.resource import IResource, Resource
from zope.interface import implementer

from client_proxy import __version__
from client_proxy.metrics import IMetrics



def notFound() -> IResource:
    """
    The resource of a path that is not found.
    """
    try:
        from twisted.web.pages import notFound as page
    except ImportError:  # Twisted before 22.10, which has only NoResource
        from twisted.web.resource import NoResource

        return NoResource()
    return page()


try:
    # What generate_latest writes, and what Prometheus of any version reads;
    # recent releases of prometheus_client make CONTENT_TYPE_LATEST 1.0.0.
    from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE
except ImportError:
    CONTENT_TYPE = CONTENT_TYPE_LATEST

# The events of every proxy of the process, labelled by the proxy's JID, in
# one registry served at /metrics.

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


def processRegistry() -> CollectorRegistry:
    """
    A new registry for the metrics of a whole process: the process's own
    (C{process_*}: resident and virtual memory, CPU seconds, open and
    maximum file descriptors, start time, read from C{/proc}), and those of
    the proxies that report to it (L{PrometheusMetrics}).
    """
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry


class _Families:
    """
    The metric families of one registry, shared by its proxies.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name, doc, labels=()):
            return Counter(name, doc, ["jid", *labels], registry=registry)

        def gauge(name, doc):
            return Gauge(name, doc, ["jid"], registry=registry)

        Info(
            "client_proxy_build",
            "The versions of client-proxy, Twisted and Python running.",
            registry=registry,
        ).info(
            {
                "version": __version__,
                "twisted": twisted.__version__,
                "python": platform.python_version(),
            }
        )
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
            "client_proxy_requests_timed_out",
            "Requesters' requests the implementing client did not answer in time.",
        )
        self.answers = counter(
            "client_proxy_answers",
            "Answers sent to requesters, by type (result, error) and error condition "
            "(empty for a result), from the implementing client or the component.",
            ("type", "condition"),
        )
        self.outboundReceived = counter(
            "client_proxy_outbound_requests_received",
            "IQ requests (get, set) the target's resources sent out through the component.",
        )
        self.outboundAnswers = counter(
            "client_proxy_outbound_answers",
            "Answers sent back to the target's resources for the requests they sent "
            "out, by type and error condition, from their recipient or the component.",
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
            "Time the implementing client took to answer a requester's request.",
            ["jid"],
            buckets=ANSWER_TIME_BUCKETS,
            registry=registry,
        )
        self.inFlight = gauge(
            "client_proxy_requests_in_flight",
            "Requests awaiting an answer, of requesters and of the target.",
        )
        self.online = gauge(
            "client_proxy_resources_online", "Online resources of the target."
        )
        self.connected = gauge(
            "client_proxy_connected",
            "1 while the component connection is authenticated, 0 otherwise.",
        )

    def states(self) -> dict[str, dict[str, object]]:
        """
        The state of each proxy, by JID, as its gauges read now: whether its
        component connection is authenticated, and how many resources of its
        target are online.
        """
        online = _byJID(self.online)
        return {
            jid: {
                "connected": bool(connected),
                "target_online": online.get(jid, 0) > 0,
                "resources_online": int(online.get(jid, 0)),
            }
            for jid, connected in _byJID(self.connected).items()
        }


def _byJID(gauge: Gauge) -> dict[str, float]:
    """
    The values of C{gauge}, one per proxy, by the proxy's JID.
    """
    return {
        sample.labels["jid"]: sample.value
        for family in gauge.collect()
        for sample in family.samples
    }


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
        self._outboundAnswers: dict[tuple[str, str], Callable[[], None]] = {}
        self._dropped: dict[str, Callable[[], None]] = {}
        self._refused: dict[str, Callable[[], None]] = {}
        self.requestReceived = families.received.labels(jid).inc
        self.requestForwarded = families.forwarded.labels(jid).inc
        self.requestRetried = families.retried.labels(jid).inc
        self.requestTimedOut = families.timedOut.labels(jid).inc
        self.outboundRequestReceived = families.outboundReceived.labels(jid).inc
        self.answerTime = families.answerTime.labels(jid).observe
        families.inFlight.labels(jid).set_function(inFlight)
        families.online.labels(jid).set_function(online)
        families.connected.labels(jid).set_function(lambda: 1 if connected() else 0)

    # requestReceived, requestForwarded, requestRetried, requestTimedOut,
    # outboundRequestReceived and answerTime are the bound methods of the
    # children, set above.

    def answerSent(self, type: str, condition: str) -> None:
        self._byCondition(self._answers, self._families.answers, type, condition)()

    def outboundAnswerSent(self, type: str, condition: str) -> None:
        self._byCondition(
            self._outboundAnswers, self._families.outboundAnswers, type, condition
        )()

    def stanzaDropped(self, reason: str) -> None:
        self._byReason(self._dropped, self._families.dropped, reason)()

    def requestRefused(self, reason: str) -> None:
        self._byReason(self._refused, self._families.refused, reason)()

    def retire(self) -> None:
        """
        Remove every series of this proxy from the registry: its gauges
        would otherwise go on reading a stopped proxy (C{/healthz} would
        count it as not connected).
        """
        families, jid = self._families, self.jid
        for family in (
            families.received, families.forwarded, families.retried, families.timedOut,
            families.outboundReceived, families.answerTime, families.inFlight,
            families.online, families.connected,
        ):
            family.remove(jid)
        for pairs, counter in (
            (self._answers, families.answers), (self._outboundAnswers, families.outboundAnswers)
        ):
            for type, condition in pairs:
                counter.remove(jid, type, condition)
        for reasons, counter in ((self._dropped, families.dropped), (self._refused, families.refused)):
            for reason in reasons:
                counter.remove(jid, reason)

    def _byCondition(
        self,
        bound: dict[tuple[str, str], Callable[[], None]],
        family: Counter,
        type: str,
        condition: str,
    ) -> Callable[[], None]:
        """
        The C{inc} of C{family}'s child for this proxy, C{type} and
        C{condition}, bound once per pair; a condition that RFC 6120 does
        not define counts as C{undefined-condition}.
        """
        inc = bound.get((type, condition))
        if inc is None:
            if condition and condition not in STANZA_ERROR_CONDITIONS:
                condition = "undefined-condition"
            inc = bound.get((type, condition))
            if inc is None:
                inc = bound[type, condition] = family.labels(self.jid, type, condition).inc
        return inc

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


def metricsRoot(registry: CollectorRegistry) -> Resource:
    """
    The root of the metrics' web site: C{/metrics} and C{/healthz} of
    C{registry}; every other path is not found.
    """
    root = _Fixed()
    root.putChild(b"metrics", MetricsResource(registry))
    root.putChild(b"healthz", HealthResource(registry))
    return root


class _Fixed(Resource):
    """
    A resource whose children are those put there: any other path below it
    is not found.
    """

    def getChild(self, path: bytes, request) -> IResource:
        return notFound()


class MetricsResource(_Fixed):
    """
    The Prometheus text exposition of a registry, rendered in the reactor's
    thread (the gauges read the proxies' state) at each request.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE.encode("ascii"))
        return generate_latest(self.registry)


class HealthResource(_Fixed):
    """
    Whether the proxies reporting to a registry serve: status 200 while
    every one of them has its component connection authenticated, 503
    otherwise (or with no proxy at all). A proxy on standby (another
    instance serves its JID) is not connected, so a standby answers 503:
    this says whether the process serves, not whether it is alive.

    The body is JSON, for the people and scripts that read it::

        {"healthy": true,
         "proxies": {"proxy.example.org": {"connected": true,
                                           "resources_online": 2,
                                           "target_online": true}}}

    A target with no resource online does not make a proxy unhealthy: the
    proxy answers its requesters, with C{service-unavailable}.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request) -> bytes:
        proxies = _familiesOf(self.registry).states()
        healthy = bool(proxies) and all(state["connected"] for state in proxies.values())
        request.setResponseCode(200 if healthy else 503)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        body = json.dumps({"healthy": healthy, "proxies": proxies}, sort_keys=True)
        return body.encode("utf-8") + b"\n"
