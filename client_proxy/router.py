"""
JAT routing of IQs between requesters and the target's resources.
"""

import itertools
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from client_proxy import jat
from client_proxy.fastpath import (
    compact,
    errorCondition,
    errorIQBytes,
    escape,
    iqBytes,
    isBounce,
    routeIQs,
)
from client_proxy.dispatch import IStrategy
from client_proxy.features import IInfoQuerier
from client_proxy.inflight import (
    ComponentQuery,
    ForwardedGet,
    ForwardedSet,
    OutboundRequest,
    Refused,
    Request,
    RequestTable,
)
from client_proxy.metrics import IMetrics, NoMetrics
from client_proxy.presence import IResourceObserver
from client_proxy.routing import Routing, RoutingHandler, StanzaTooLarge

#: Ids of the requests the component sends on for the target start with
#: this; the rest is a counter.
ALIAS_PREFIX = "client-proxy-"

#: Ids of the component's own requests (L{IQRouter.query}) start with this.
QUERY_PREFIX = ALIAS_PREFIX + "query-"

#: Room left in a stanza for the C{to} the router adds when it sends a
#: kept request on: a full JID is at most 3 x 1023 bytes (RFC 7622, 3.1),
#: plus the attribute's quotes and escapes.
_ROOM_FOR_TO = 3 * 1023 + 32

_TOO_LARGE = "policy-violation", "modify"


@implementer(IResourceObserver, IInfoQuerier)
class IQRouter(RoutingHandler):
    """
    Forwards IQ requests to a resource of the target and answers back.

    On the fast path of L{client_proxy.fastpath.FastXmlStream} each IQ
    comes as its outer tag's attributes and its payload as bytes, and
    leaves the same way, with only its addresses changed. On any other XML
    stream (a Wokkel L{StreamManager}'s, say, beside handlers of the
    component's own) it gets the IQ elements the other handlers left, and
    behaves the same (L{client_proxy.fastpath.routeIQs}).

    A request (RFC 6120, 8.2.3: an IQ of type get or set) from anyone but
    the target, to the component's JID, bare or full, goes to one online
    resource of the target, chosen by the strategy, with C{from} set to
    C{<component>/<requester's full JID>} (see L{client_proxy.jat}) and
    C{id} and payload untouched. The resource's answer (result or error)
    to that address goes back to the requester, from the address the
    requester wrote.

    The other way, a request from a resource of the target to
    C{<component>/<JID>} goes on to C{<JID>} from the component's bare JID
    (see L{requestFromTargetReceived}), and its answer back to the resource.

    Every request gets exactly one answer: from the resource, or an error
    from the component when no resource is online, a limit is reached, the
    request times out, or its resource goes away (a C{get}, which has no
    side effects, is then sent again to another resource). Answers that
    answer nothing in flight are dropped, never forwarded.

    The requests in flight outlive the component's connection: answers
    that arrive on the next one are forwarded, and the errors of those
    that expire in between are sent once it is up.

    With routing by features (L{client_proxy.features.FeatureRouting}), a
    request goes only to a resource that offers the namespace of its
    payload; when some resource is online but none offers it, the
    requester gets C{service-unavailable} at once. The disco#info requests
    that routing needs are sent here (L{query}), kept in the table of
    requests in flight with a timeout of their own, and their answers are
    the component's, never forwarded.

    Nothing sent exceeds what the server accepts on the component stream
    (L{client_proxy.routing.Streams.sendFrom}): a request too large to
    forward is refused with C{policy-violation}, and an answer too large
    to send back is replaced by that error. Refusals, drops and timeouts,
    which anyone can cause, are counted and summarised (L{Tally}), never
    logged one by one.

    @ivar component: the component's bare JID.
    @ivar target: the target's bare JID.
    """

    log = Logger()

    def __init__(
        self,
        routing: Routing,
        table: RequestTable,
        clock: IReactorTime,
        metrics: IMetrics | None = None,
    ) -> None:
        super().__init__(routing)
        self.metrics = metrics or NoMetrics()
        self.table = table
        self.clock = clock
        self._expiry: IDelayedCall | None = None
        self._aliases = itertools.count()
        #: Errors for requests that expired while no connection could carry
        #: them: (request, condition, type, text), sent on the next one.
        self._owed: list[tuple[Request, str, str, str]] = []
        self.resources.addObserver(self)
        if self.features is not None:
            self.features.discovery.querier = self

    def connectionInitialized(self) -> None:
        super().connectionInitialized()
        routeIQs(self.xmlstream, self.iqReceived)
        self._sendOwed()

    def instanceStreamInitialized(self, xs) -> None:
        """
        The instance's own connection is up: IQs to its host come this way.
        """
        self.streams.connected(self.instance, xs)
        routeIQs(xs, self.iqReceived)

    def instanceStreamLost(self) -> None:
        """
        The instance's own connection is gone; the answers to the requests
        in flight will come on the next one, or the requests expire.
        """
        self.streams.disconnected(self.instance)

    def connectionLost(self, reason) -> None:
        """
        The connection is gone, not the requests in flight: their answers
        may come on the next one, which the client service makes at once.
        Until then, their deadlines still run.
        """
        super().connectionLost(reason)
        if self.table:
            self.log.warn(
                "Connection lost with {count} requests in flight; they wait for "
                "their answers on the next connection, until their deadlines",
                count=len(self.table),
            )

    def iqReceived(self, iq: dict[str, str], inner: bytes) -> bool:
        """
        An IQ arrived: C{iq} holds its attributes, C{inner} its payload.

        @return: whether the router took it; results and errors that answer
            nothing the router sent are left to other handlers (the answers
            to the component's own requests).
        """
        # Read before routing, which rewrites the addresses in place.
        sender, stanzaID, addressedTo = iq.get("from", ""), iq.get("id"), iq.get("to")
        try:
            return self._route(iq, inner)
        except Exception:
            # A bug must not cost the connection, nor the request its answer.
            self.log.failure("Failed to route an IQ from {sender}", sender=sender)
            if iq.get("type") in ("get", "set") and not self.table.inFlight(
                sender, stanzaID or ""
            ):
                self._sendError(
                    stanzaID,
                    addressedTo or self.component,
                    sender,
                    "internal-server-error",
                    "cancel",
                    None,
                )
            return True

    def _route(self, iq: dict[str, str], inner: bytes) -> bool:
        fromTarget = jat.bare(iq.get("from", "")) == self.target
        if iq.get("type") in ("get", "set"):
            if fromTarget:
                self.requestFromTargetReceived(iq, inner)
            else:
                self.requestReceived(iq, inner)
            return True
        stanzaID = iq.get("id", "")
        if stanzaID.startswith(ALIAS_PREFIX) and iq.get("to") == self.instance:
            if stanzaID.startswith(QUERY_PREFIX):
                self.queryAnswerReceived(iq, inner)
            else:
                self.outboundAnswerReceived(iq, inner)
            return True
        if fromTarget:
            self.answerReceived(iq, inner)
            return True
        return False

    def requestReceived(self, iq: dict[str, str], inner: bytes) -> None:
        """
        A requester sent a get or set: forward it to a resource.
        """
        self.metrics.requestReceived()
        requester = iq.get("from", "")
        if not self.access.allows(requester):
            self.refuse(iq, "forbidden", "auth", None, "access")
            return
        online = self.resources.online()
        if not online:
            self.refuse(
                iq, "service-unavailable", "cancel", "no resource is online", "no_resource"
            )
            return
        stanzaID = iq.get("id")
        if stanzaID is None:
            self.refuse(iq, "bad-request", "modify", "an IQ request needs an id", "no_id")
            return
        # Refused past a limit before anything is spent on it: a flood
        # costs little more than reading it.
        try:
            self.table.admit(requester, stanzaID, len(inner) if iq["type"] == "get" else 0)
        except Refused as e:
            self.refuse(iq, e.condition, e.errorType, e.text, e.reason)
            return
        try:
            translated = jat.encode(self.instance, requester)
        except jat.JATError as e:
            self.refuse(iq, "jid-malformed", "modify", str(e), "bad_address")
            return
        addressedTo = iq.pop("to", self.component)
        iq["from"] = translated
        # The stanza without its "to", which comes first (see _sendTo): a
        # get keeps it, to send it again elsewhere.
        stanza = self._fitted(iqBytes(iq, inner)[3:])
        if stanza is None:
            self._refused(requester, "too_large")
            self._sendError(
                stanzaID, addressedTo, requester, *_TOO_LARGE, self._tooLargeText("request")
            )
            return
        features = self.features
        strategy = self.strategy if features is None else features.strategyFor(inner)
        resource = strategy.choose(requester)
        if resource is None:
            if features is not None and features.base:
                reason, text = "no_feature", "no online resource offers the payload's namespace"
            else:
                reason, text = "no_resource", "no resource"
            self._refused(requester, reason)
            self._sendError(
                stanzaID, addressedTo, requester, "service-unavailable", "cancel", text
            )
            return
        addresses = dict(
            requester=requester, stanzaID=stanzaID, to=addressedTo, resource=resource
        )
        request = (
            ForwardedGet(stanza=stanza, **addresses)
            if iq["type"] == "get"
            else ForwardedSet(**addresses)
        )
        try:
            self.table.add(request, now=self.clock.seconds())
        except Refused as e:
            self._refused(requester, e.reason)
            self._sendError(stanzaID, addressedTo, requester, e.condition, e.errorType, e.text)
            return
        self._scheduleExpiry()
        if self._sendTo(resource, stanza):
            self.metrics.requestForwarded()
        else:
            self.table.remove(request)
            self._refused(requester, "too_large")
            self.answerWithError(request, *_TOO_LARGE, self._tooLargeText("request"))

    def _fitted(self, stanza: bytes) -> bytes | None:
        """
        C{stanza}, an IQ less its first three bytes, as it may be sent: as
        it is if it is small enough, else written compactly, with room for
        the C{to} L{_sendTo} adds; C{None} if it cannot be made to fit.
        """
        room = self.streams.maxStanzaSize - _ROOM_FOR_TO
        if len(stanza) <= room:
            return stanza
        smaller = compact(b"<iq" + stanza)
        if smaller is None or len(smaller) - 3 > room:
            return None
        return smaller[3:]

    def _tooLargeText(self, what: str) -> str:
        return "the %s is larger than the %d bytes the proxy may send" % (
            what,
            self.streams.maxStanzaSize,
        )

    def _sendTo(self, resource: str, stanza: bytes) -> bool:
        """
        Send a request, kept as by L{_fitted}, to C{resource}.

        @return: whether it could be sent (see L{Streams.sendFrom}); C{False}
            only when it is too large.
        """
        try:
            self.streams.sendFrom(
                self.instance,
                b"<iq to='" + escape(resource).encode("utf-8") + b"'" + stanza,
            )
        except StanzaTooLarge:
            return False
        return True

    def _refused(self, requester: str, reason: str) -> None:
        """
        Count a request the component answers itself, by C{reason}.
        """
        self.metrics.requestRefused(reason)
        self.tally.count("refused", "requests", reason, requester)

    def answerReceived(self, iq: dict[str, str], inner: bytes) -> None:
        """
        A resource sent a result or an error: forward it if it answers a
        request in flight, and only then.
        """
        sender = iq.get("from", "")
        requester = jat.decode(self.instance, iq.get("to", ""))
        request = None
        if requester is not None:
            request = self.table.answered(requester, iq.get("id", ""), sender)
        if request is None:
            self._dropUnsolicited(iq)
            return
        if iq.get("type") == "error" and self._tryElsewhere(request, inner):
            return
        self.table.remove(request)
        self._answered(request, iq, inner)

    def _dropUnsolicited(self, iq: dict[str, str]) -> None:
        """
        An answer to nothing in flight, or from the wrong entity: never
        forwarded.
        """
        self.metrics.stanzaDropped("unsolicited")
        self.tally.count("dropped", "answers", "unsolicited", iq.get("from", ""))

    def _tryElsewhere(self, request: Request, inner: bytes) -> bool:
        """
        A get answered with a bare C{service-unavailable} goes once to
        another online resource, and the error is not forwarded.

        That is how a server bounces a stanza to a full JID that has gone
        offline (RFC 6121, 8.5.3.2.1), and the bounce can come before the
        resource's unavailable presence. A client that really answered so
        just makes the get, which has no side effects, go to one more
        resource, whose answer is forwarded whatever it is.

        @return: whether the request went elsewhere.
        """
        if (
            not isinstance(request, ForwardedGet)
            or request.triedElsewhere
            or not isBounce(inner)
        ):
            return False
        moved = self._strategyFor(request).choose(request.requester, exclude=request.resource)
        if moved is None:
            return False
        request.triedElsewhere = True
        self._sendElsewhere(request, moved, "bounced")
        return True

    def _strategyFor(self, request: ForwardedGet) -> IStrategy:
        """
        The strategy that chooses where the get C{request} may go, as when
        it arrived.
        """
        if self.features is None:
            return self.strategy
        stanza = request.stanza  # its attributes escape ">": the first ends the tag
        return self.features.strategyFor(stanza[stanza.find(b">") + 1 :])

    def _sendElsewhere(
        self, request: ForwardedGet, moved: str, why: str
    ) -> None:
        """
        Send the get C{request} again, to C{moved}.
        """
        self.tally.count("retried", "gets", why, request.requester)
        self.table.move(request, moved)
        self.metrics.requestRetried()
        if not self._sendTo(moved, request.stanza):
            self.table.remove(request)
            self.answerWithError(request, *_TOO_LARGE, self._tooLargeText("request"))

    def _answered(self, request: Request, iq: dict[str, str], inner: bytes) -> None:
        """
        Send the answer to C{request} to its requester.
        """
        type = iq.get("type", "")
        if not isinstance(request, OutboundRequest):
            self.metrics.answerTime(
                self.clock.seconds() - (request.deadline - self.table.timeout)
            )
        iq["from"] = request.to
        iq["to"] = request.requester
        try:
            self.streams.sendFrom(request.to, iqBytes(iq, inner))
        except StanzaTooLarge:
            self.metrics.stanzaDropped("too_large")
            self.tally.count("dropped", "answers", "too large", iq.get("to", ""))
            self.answerWithError(request, *_TOO_LARGE, self._tooLargeText("answer"))
            return
        self._answerSent(request.requester, type, errorCondition(inner) if type == "error" else "")

    def requestFromTargetReceived(self, iq: dict[str, str], inner: bytes) -> None:
        """
        A resource of the target sent a get or set to the component.

        To C{<component>/<JID>} it goes on to C{<JID>}, from the component's
        bare JID and with an id of the component's own, so that two
        resources using the same id never collide; the answer comes back to
        the resource with the original id, from C{<component>/<JID>}. To
        the component's bare JID it is a C{bad-request}, as
        mod_client_proxy answers: nobody is behind it.
        """
        self.metrics.outboundRequestReceived()
        sender = iq["from"]
        addressedTo = iq.get("to", "")
        remote = jat.decode(self.component, addressedTo) or jat.decode(
            self.instance, addressedTo
        )
        if remote is None:
            self.refuse(iq, "bad-request", "cancel", None, "no_one_there")
            return
        if not jat.isValidJID(remote) or jat.domain(remote) in (
            self.component,
            self.instance,
        ):
            self.refuse(
                iq, "jid-malformed", "modify", "not an address to send to", "bad_address"
            )
            return
        stanzaID = iq.get("id")
        if stanzaID is None:
            self.refuse(iq, "bad-request", "modify", "an IQ request needs an id", "no_id")
            return
        alias = ALIAS_PREFIX + str(next(self._aliases))
        try:
            request = self.table.add(
                OutboundRequest(
                    requester=sender,
                    stanzaID=stanzaID,
                    to=addressedTo,
                    resource=remote,
                    alias=alias,
                ),
                now=self.clock.seconds(),
            )
        except Refused as e:
            self.refuse(iq, e.condition, e.errorType, e.text, e.reason)
            return
        self._scheduleExpiry()
        try:
            self.streams.sendFrom(
                self.instance,
                iqBytes({**iq, "from": self.instance, "to": remote, "id": alias}, inner),
            )
        except StanzaTooLarge:
            self.table.remove(request)
            self.refuse(iq, *_TOO_LARGE, self._tooLargeText("request"), "too_large")

    def outboundAnswerReceived(self, iq: dict[str, str], inner: bytes) -> None:
        """
        An answer to a request the component sent on for the target: back
        to the resource that asked, with its own id.
        """
        request = self.table.answerAlias(iq["id"], iq.get("from", ""))
        if request is None:
            self._dropUnsolicited(iq)
            return
        iq["id"] = request.stanzaID
        self._answered(request, iq, inner)

    def query(
        self,
        resource: str,
        payload: bytes,
        timeout: float,
        answered: Callable[[bytes | None], None],
    ) -> bool:
        """
        Send a get of the component's own to C{resource}, from the
        component, kept in the table of requests in flight with C{timeout}
        (see L{IInfoQuerier}).
        """
        stanzaID = QUERY_PREFIX + str(next(self._aliases))
        request = ComponentQuery(
            requester=self.instance,
            stanzaID=stanzaID,
            to=self.instance,
            resource=resource,
            timeout=timeout,
            answered=answered,
        )
        try:
            self.table.add(request, now=self.clock.seconds())
        except Refused:
            return False
        attributes = {"type": "get", "id": stanzaID, "from": self.instance, "to": resource}
        try:
            sent = self.streams.sendFrom(self.instance, iqBytes(attributes, payload))
        except StanzaTooLarge:
            sent = False
        if not sent:
            self.table.remove(request)
            return False
        if self._expiry is not None and self._expiry.getTime() > request.deadline:
            self._cancelExpiry()
        self._scheduleExpiry()
        return True

    def queryAnswerReceived(self, iq: dict[str, str], inner: bytes) -> None:
        """
        An answer to a request of the component's own: it goes to whoever
        asked, and nowhere else.
        """
        request = self.table.answered(self.instance, iq["id"], iq.get("from", ""))
        if not isinstance(request, ComponentQuery):
            self._dropUnsolicited(iq)
            return
        self.table.remove(request)
        request.answered(inner if iq.get("type") == "result" else None)

    def resourceOnline(self, resource: str) -> None:
        pass

    def resourceOffline(self, resource: str) -> None:
        """
        C{resource} went away holding requests: a C{get} goes to another
        resource at once, as it has no side effects; a C{set} is answered
        with an error, since whether it took effect is unknown.
        """
        held = self.table.heldBy(resource)
        if held:
            self.log.info(
                "{resource} went offline holding {count} requests: gets go to "
                "another resource, sets are answered with an error",
                resource=resource,
                count=len(held),
            )
        for request in held:
            if isinstance(request, ComponentQuery):
                self.table.remove(request)
                request.answered(None)
                continue
            moved = (
                self._strategyFor(request).choose(request.requester, exclude=resource)
                if isinstance(request, ForwardedGet)
                else None
            )
            if isinstance(request, ForwardedGet) and moved is not None:
                self._sendElsewhere(request, moved, "went offline")
            elif isinstance(request, ForwardedGet):
                self.table.remove(request)
                self.answerWithError(
                    request, "service-unavailable", "cancel", "no resource is online"
                )
            else:
                self.table.remove(request)
                self.answerWithError(
                    request,
                    "recipient-unavailable",
                    "wait",
                    "the resource serving this request went offline before "
                    "answering; whether it took effect is unknown",
                )

    def refuse(
        self,
        iq: dict[str, str],
        condition: str,
        errorType: str,
        text: str | None,
        reason: str,
    ) -> None:
        """
        Answer a request that was not forwarded with a stanza error, and
        count it by C{reason}.
        """
        self._refused(iq.get("from", ""), reason)
        self._sendError(
            iq.get("id"),
            iq.get("to", self.component),
            iq.get("from", ""),
            condition,
            errorType,
            text,
        )

    def answerWithError(
        self, request: Request, condition: str, errorType: str, text: str
    ) -> bool:
        """
        Answer a request in flight, no longer in the table, with an error.

        @return: whether a connection took it (see L{_sendError}).
        """
        return self._sendError(
            request.stanzaID, request.to, request.requester, condition, errorType, text
        )

    def _sendError(
        self,
        stanzaID: str | None,
        sender: str,
        recipient: str,
        condition: str,
        errorType: str,
        text: str | None,
    ) -> bool:
        """
        Send a requester the component's own error answer, and count it.

        An answer that cannot be written within the server's limit (a
        request whose id alone is larger) cannot be sent at all: it is
        dropped, and counted.

        @return: whether a connection took it: C{False} when none is up.
        """
        try:
            sent = self.streams.sendFrom(
                sender, errorIQBytes(stanzaID, sender, recipient, condition, errorType, text)
            )
        except StanzaTooLarge:
            self.metrics.stanzaDropped("too_large")
            self.tally.count("dropped", "errors", "too large", recipient)
            return True
        if sent:
            self._answerSent(recipient, "error", condition)
        return sent

    def _answerSent(self, recipient: str, type: str, condition: str) -> None:
        """
        Count an answer sent to C{recipient}: to a resource of the target,
        it answers a request the target sent out, counted apart.
        """
        if jat.bare(recipient) == self.target:
            self.metrics.outboundAnswerSent(type, condition)
        else:
            self.metrics.answerSent(type, condition)

    def answerAllWithError(self, condition: str, errorType: str, text: str) -> int:
        """
        Answer every request in flight with an error, as before a stop.

        @return: how many were answered (the component's own requests are
            not: they are dropped).
        """
        requests = [r for r in self.table.clear() if not isinstance(r, ComponentQuery)]
        self._cancelExpiry()
        for request in requests:
            self.answerWithError(request, condition, errorType, text)
        return len(requests)

    def setTimeout(self, timeout: float) -> None:
        """
        Give requests C{timeout} seconds to be answered, those in flight
        too (see L{RequestTable.setTimeout}): a shorter one may have
        expired some already, which are answered at once.
        """
        self.table.setTimeout(timeout)
        self._cancelExpiry()
        self._scheduleExpiry()

    def _scheduleExpiry(self) -> None:
        if self._expiry is None:
            deadline = self.table.nextDeadline()
            if deadline is not None:
                delay = max(0.0, deadline - self.clock.seconds())
                self._expiry = self.clock.callLater(delay, self._expire)

    def _cancelExpiry(self) -> None:
        if self._expiry is not None:
            if self._expiry.active():
                self._expiry.cancel()
            self._expiry = None

    def _expire(self) -> None:
        """
        Answer the requests whose time is up with C{remote-server-timeout}
        (type wait); a late answer will find nothing to answer.
        """
        self._expiry = None
        for request in self.table.expire(self.clock.seconds()):
            if isinstance(request, ComponentQuery):
                request.answered(None)
                continue
            if not isinstance(request, OutboundRequest):
                self.metrics.requestTimedOut()
            self.tally.count("timed out", "requests", "no answer in time", request.requester)
            error = (
                request,
                "remote-server-timeout",
                "wait",
                "the implementing client did not answer in time",
            )
            if not self.answerWithError(*error):
                self._owed.append(error)
        self._scheduleExpiry()

    def _sendOwed(self) -> None:
        """
        Send the errors of the requests that expired while no connection
        was up, as they would have been sent then.
        """
        owed, self._owed = self._owed, []
        for error in owed:
            if not self.answerWithError(*error):
                self._owed.append(error)
