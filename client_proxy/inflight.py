"""
The table of requests in flight: pure state, free of I/O.

RFC 6120, 8.2.3: every IQ get or set receives exactly one result or error.
The table remembers each request forwarded to a resource of the target
until its answer arrives, its deadline passes or its resource goes away, so
that the component can keep that promise on the implementing client's
behalf, and forward only answers that were asked for.

Time is passed in, never read, so the table can be driven by any clock.
"""

import math
from collections import deque
from collections.abc import Callable

from client_proxy.jat import bare, bareAndDomain


#: The bytes of stanzas kept for retries, together, by default.
DEFAULT_MAX_RETAINED_BYTES = 64 << 20


class Request:
    """
    One request in flight; its kind says what may be done with it.

    @ivar requester: the full JID that asked.
    @ivar stanzaID: the request's id, as the requester chose it.
    @ivar to: the address the requester sent it to, which becomes the
        C{from} of the answer.
    @ivar resource: the full JID serving it: a resource of the target, or
        for an L{OutboundRequest}, the entity it was sent on to.
    @ivar deadline: when the requester is told that it timed out; set by
        L{RequestTable.add}.
    @cvar timeout: seconds the request may stay in flight, if not the
        table's (L{RequestTable.timeout}); C{None} for the table's.
    """

    __slots__ = ("requester", "stanzaID", "to", "resource", "deadline")

    timeout: float | None = None

    def __init__(self, *, requester: str, stanzaID: str, to: str, resource: str) -> None:
        self.requester = requester
        self.stanzaID = stanzaID
        self.to = to
        self.resource = resource
        self.deadline = 0.0

    def retainedBytes(self) -> int:
        """
        How many bytes of stanza the request keeps.
        """
        return 0


class ForwardedSet(Request):
    """
    A requester's C{set}, forwarded to a resource of the target: it may
    have taken effect, so it is never sent again.
    """

    __slots__ = ()


class ForwardedGet(Request):
    """
    A requester's C{get}, forwarded to a resource of the target: it has no
    side effects, so it may be sent again to another resource.

    @ivar stanza: the stanza forwarded, less its C{to}, kept to send it
        again (emptied once the request is answered).
    @ivar triedElsewhere: whether a bounce already sent it to another
        resource.
    """

    __slots__ = ("stanza", "triedElsewhere")

    def __init__(self, *, stanza: bytes, **kwargs: str) -> None:
        super().__init__(**kwargs)
        self.stanza = stanza
        self.triedElsewhere = False

    def retainedBytes(self) -> int:
        return len(self.stanza)


class OutboundRequest(Request):
    """
    A request of a resource of the target, sent on under the component's
    name to someone else.

    @ivar alias: the id the component gave it, which its answer carries.
    """

    __slots__ = ("alias",)

    def __init__(self, *, alias: str, **kwargs: str) -> None:
        super().__init__(**kwargs)
        self.alias = alias


class ComponentQuery(Request):
    """
    A request of the component's own (a disco#info, to learn what a
    resource offers), sent from the component to C{resource}: its answer is
    the component's, never forwarded to anyone. C{requester} is the
    component's address it was sent from.

    It has a timeout of its own, and its outcome goes to C{answered}: the
    payload of a result, or C{None} for an error, a timeout or the
    resource going away.
    """

    __slots__ = ("timeout", "answered")

    def __init__(
        self, *, timeout: float, answered: Callable[[bytes | None], None], **kwargs: str
    ) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout
        self.answered = answered


class Refused(Exception):
    """
    The table will not take a request.

    @ivar condition: the stanza error condition (RFC 6120, 8.3.3) to answer
        the request with; C{errorType} its error type.
    @ivar reason: which rule refused it, in a word, for metrics and logs.
    """

    def __init__(self, condition: str, errorType: str, text: str, reason: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.errorType = errorType
        self.text = text
        self.reason = reason


class RequestTable:
    """
    Requests in flight, keyed by requester and id.

    Keying on the requester's full JID as well as the id means that two
    requesters who happen to choose the same id never collide. The
    requests have the table's timeout, but for a few kinds with their own
    (L{ComponentQuery}): there is a queue per timeout, in which deadlines
    grow in insertion order, so that the heads of the queues find the
    expired requests without a timer each.

    The table is shared fairly. Anyone on the federated network may send
    requests, and a server can invent as many resources, and users, of its
    own domain as it likes; so a requester is counted by its bare JID, and
    every domain has its share too: a flood from one domain leaves room for
    the others. The gets' payloads kept for a retry are counted in bytes.

    @ivar timeout: seconds a request may stay in flight.
    @ivar maxPerRequester: requests one bare JID may have in flight.
    @ivar maxPerDomain: requests the JIDs of one domain may have in flight.
    @ivar maxTotal: requests all requesters together may have in flight.
    @ivar maxRetainedBytes: bytes of stanzas kept for a retry, together.
    @ivar retainedBytes: bytes of stanzas kept for a retry now.
    """

    def __init__(
        self,
        timeout: float,
        maxPerRequester: int,
        maxTotal: int,
        maxPerDomain: int | None = None,
        maxRetainedBytes: int = DEFAULT_MAX_RETAINED_BYTES,
    ) -> None:
        self.timeout = timeout
        self.maxPerRequester = maxPerRequester
        self.maxTotal = maxTotal
        self.maxPerDomain = maxPerDomain or max(1, maxTotal // 4)
        self.maxRetainedBytes = maxRetainedBytes
        self.retainedBytes = 0
        self._requests: dict[tuple[str, str], Request] = {}
        self._byResource: dict[str, dict[tuple[str, str], Request]] = {}
        self._perRequester: dict[str, int] = {}
        self._perDomain: dict[str, int] = {}
        #: The queue of the requests with the table's timeout, and one per
        #: other timeout.
        self._deadlines: deque[Request] = deque()
        self._queues: dict[float, deque[Request]] = {}
        self._aliases: dict[str, Request] = {}
        self._pendingObservers: list[Callable[[str, int], None]] = []

    def observePending(self, observer: Callable[[str, int], None]) -> None:
        """
        Call C{observer(resource, count)} at every change of the number of
        requests in flight at a resource, with the new number.
        """
        self._pendingObservers.append(observer)

    def unobservePending(self, observer: Callable[[str, int], None]) -> None:
        """
        Stop calling C{observer}, given to L{observePending}.
        """
        self._pendingObservers.remove(observer)

    def _pendingChanged(self, resource: str, count: int) -> None:
        for observer in self._pendingObservers:
            observer(resource, count)

    def __len__(self) -> int:
        return len(self._requests)

    def inFlight(self, requester: str, stanzaID: str) -> bool:
        return (requester, stanzaID) in self._requests

    def admit(self, requester: str, stanzaID: str, size: int = 0) -> None:
        """
        Check that a request may be added, keeping C{size} bytes for a
        retry: callers check before they spend anything on a request.

        @raise Refused: past a limit, or when the requester already has a
            request with this id in flight (its answer could not be told
            apart).
        """
        self._check(requester, stanzaID, size, *bareAndDomain(requester))

    def _check(self, requester: str, stanzaID: str, size: int, jid: str, host: str) -> None:
        """
        L{admit}, with the requester's bare JID and domain read already.
        """
        if (requester, stanzaID) in self._requests:
            raise Refused(
                "conflict",
                "cancel",
                "a request of yours with this id is in flight",
                "duplicate_id",
            )
        if self._perRequester.get(jid, 0) >= self.maxPerRequester:
            raise Refused(
                "resource-constraint",
                "wait",
                "too many requests of yours in flight",
                "requester_limit",
            )
        if self._perDomain.get(host, 0) >= self.maxPerDomain:
            raise Refused(
                "resource-constraint",
                "wait",
                "too many requests from your domain in flight",
                "domain_limit",
            )
        if len(self._requests) >= self.maxTotal:
            raise Refused(
                "resource-constraint", "wait", "too many requests in flight", "total_limit"
            )
        if size and self.retainedBytes + size > self.maxRetainedBytes:
            raise Refused(
                "resource-constraint",
                "wait",
                "too many bytes of requests in flight",
                "retained_bytes",
            )

    def add(self, request: Request, *, now: float) -> Request:
        """
        Record C{request}, forwarded at C{now}; its deadline is set here,
        from its own timeout or the table's.

        @raise Refused: as L{admit}.
        """
        size = request.retainedBytes()
        jid, host = bareAndDomain(request.requester)
        self._check(request.requester, request.stanzaID, size, jid, host)
        self.retainedBytes += size
        timeout = request.timeout
        if timeout is None:
            timeout, queue = self.timeout, self._deadlines
        else:
            queue = self._queues.setdefault(timeout, deque())
        request.deadline = now + timeout
        key = (request.requester, request.stanzaID)
        self._requests[key] = request
        if isinstance(request, OutboundRequest):
            self._aliases[request.alias] = request
        held = self._byResource.setdefault(request.resource, {})
        held[key] = request
        self._pendingChanged(request.resource, len(held))
        self._perRequester[jid] = self._perRequester.get(jid, 0) + 1
        self._perDomain[host] = self._perDomain.get(host, 0) + 1
        queue.append(request)
        if len(queue) > 2 * len(self._requests) + 1024:
            self._compact()
        return request

    def _compact(self) -> None:
        """
        Drop the answered requests from the queues of deadlines, which keep
        them until their deadline otherwise: at thousands of requests a
        second, that is a lot of memory for nothing.
        """
        self._deadlines = self._live(self._deadlines)
        for timeout, queue in list(self._queues.items()):
            self._queues[timeout] = self._live(queue)

    def _live(self, queue: deque[Request]) -> deque[Request]:
        live = self._requests
        return deque(r for r in queue if live.get((r.requester, r.stanzaID)) is r)

    def answered(self, requester: str, stanzaID: str, resource: str) -> Request | None:
        """
        The request that an answer from C{resource} answers, left in flight.

        @return: C{None} when no such request is in flight, or when it went
            to another resource: such an answer is unsolicited and must not
            be forwarded.
        """
        request = self._requests.get((requester, stanzaID))
        if request is None or request.resource != resource:
            return None
        return request

    def answer(self, requester: str, stanzaID: str, resource: str) -> Request | None:
        """
        Take the request that an answer from C{resource} answers.

        @return: the request, now removed; C{None} as for L{answered}.
        """
        request = self.answered(requester, stanzaID, resource)
        if request is not None:
            self.remove(request)
        return request

    def answerAlias(self, alias: str, sender: str) -> Request | None:
        """
        Take the request sent on as C{alias} that an answer from C{sender}
        answers: C{sender} must be the address it was sent to, or a full JID
        of it when it was sent to a bare JID (RFC 6120, 8.2.3; the account's
        server may answer a bare JID).

        @return: the request, now removed, or C{None}.
        """
        request = self._aliases.get(alias)
        if request is None:
            return None
        if sender != request.resource and bare(sender) != request.resource:
            return None
        self.remove(request)
        return request

    def remove(self, request: Request) -> None:
        """
        Forget C{request}, which must be in flight.
        """
        key = (request.requester, request.stanzaID)
        del self._requests[key]
        self.retainedBytes -= request.retainedBytes()
        if isinstance(request, ForwardedGet):
            request.stanza = b""  # let go of the payload at once
        elif isinstance(request, OutboundRequest):
            del self._aliases[request.alias]
        held = self._byResource[request.resource]
        del held[key]
        self._pendingChanged(request.resource, len(held))
        if not held:
            del self._byResource[request.resource]
        jid, host = bareAndDomain(request.requester)
        _decrement(self._perRequester, jid)
        _decrement(self._perDomain, host)

    def move(self, request: Request, resource: str) -> None:
        """
        C{request}, in flight, is now served by C{resource}.
        """
        key = (request.requester, request.stanzaID)
        held = self._byResource[request.resource]
        del held[key]
        self._pendingChanged(request.resource, len(held))
        if not held:
            del self._byResource[request.resource]
        request.resource = resource
        held = self._byResource.setdefault(resource, {})
        held[key] = request
        self._pendingChanged(resource, len(held))

    def pendingAt(self, resource: str) -> int:
        """
        How many requests in flight C{resource} holds.
        """
        return len(self._byResource.get(resource, ()))

    def heldBy(self, resource: str) -> list[Request]:
        """
        The requests in flight at C{resource}.
        """
        return list(self._byResource.get(resource, {}).values())

    def expire(self, now: float) -> list[Request]:
        """
        Remove and return the requests whose deadline has passed.
        """
        expired = []
        for deadlines in (self._deadlines, *self._queues.values()):
            while deadlines and deadlines[0].deadline <= now:
                request = deadlines.popleft()
                if self._requests.get((request.requester, request.stanzaID)) is request:
                    self.remove(request)
                    expired.append(request)
        if self._queues:
            expired.sort(key=lambda request: request.deadline)
        return expired

    def setTimeout(self, timeout: float) -> None:
        """
        Give every request C{timeout} seconds from when it was added, those
        in flight too: each deadline moves by the difference, so they stay
        in the order they were added.
        """
        shift = timeout - self.timeout
        self.timeout = timeout
        for request in self._deadlines:
            request.deadline += shift

    def nextDeadline(self) -> float | None:
        """
        When L{expire} may next find something, or C{None} when empty.

        The queues may still hold requests that were answered; their
        deadlines count all the same, which only costs an early call.
        """
        if not self._requests:
            self._deadlines.clear()
            self._queues.clear()
            return None
        deadline = self._deadlines[0].deadline if self._deadlines else math.inf
        for queue in self._queues.values():
            if queue and queue[0].deadline < deadline:
                deadline = queue[0].deadline
        return deadline

    def clear(self) -> list[Request]:
        """
        Remove and return every request in flight.
        """
        requests = list(self._requests.values())
        self._requests.clear()
        for resource in self._byResource:
            self._pendingChanged(resource, 0)
        self._byResource.clear()
        self._perRequester.clear()
        self._perDomain.clear()
        self._deadlines.clear()
        self._queues.clear()
        self._aliases.clear()
        self.retainedBytes = 0
        return requests


def _decrement(counts: dict[str, int], key: str) -> None:
    """
    Count one less for C{key}, forgetting it at zero: the counts hold only
    who has requests in flight.
    """
    count = counts[key] - 1
    if count:
        counts[key] = count
    else:
        del counts[key]
