"""
Routing by advertised features: a request goes only to a resource that
offers the namespace of its payload.

Each resource's features are learned from its entity capabilities
(XEP-0115): the component asks one resource for the disco#info of each
C{ver} it does not know, checks the answer against the C{ver}, and keeps
it by C{ver} for every resource that announces the same one
(L{CapsDiscovery}). A resource without caps, or whose C{ver} is not known
yet, serves everything, as without this routing.

The resources eligible for a request are those of an L{EligibleSet}: one
per namespace that some resource advertises, holding the resources that
advertise it and those whose features are unknown; and one for every other
namespace, holding only the latter. The strategy of the proxy is built
over each set when a request first needs it (L{FeatureRouting}), so that a
choice costs what it costs without features, plus reading the payload's
namespace. The sets are bounded by what the target's resources advertise,
never by what requesters write.
"""

import re
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pyexpat import ExpatError, ParserCreate

from twisted.logger import Logger
from zope.interface import Interface, implementer

from client_proxy.caps import Caps, IllFormed, infoQuery, parseInfo, verification
from client_proxy.dispatch import STRATEGIES, IStrategy, StickyStrategy
from client_proxy.inflight import RequestTable
from client_proxy.presence import (
    IPresenceIndex,
    IResourceSet,
    ObservedSet,
    Resources,
    Undrained,
)

#: A start tag, unprefixed, with an C{xmlns} attribute whose value reads as
#: it is written (no reference, no whitespace that XML normalizes, XML 1.0,
#: 3.3.3), which it captures in either quotes.
_TAG = re.compile(
    rb"""\s*<[^\s/>!?:]+(?:\s+(?!xmlns\s*=)[^\s=/>]+\s*=\s*(?:'[^']*'|"[^"]*"))*"""
    rb"""\s+xmlns\s*=\s*(?:'([^'&\t\n\r]*)'|"([^"&\t\n\r]*)")"""
    rb"""(?:\s+[^\s=/>]+\s*=\s*(?:'[^']*'|"[^"]*"))*\s*/?>"""
)


def payloadNamespace(inner: bytes) -> str:
    """
    The namespace of the first child element of an IQ whose inner XML is
    C{inner}: its payload (RFC 6120, 8.2.3). C{""} when there is none, or
    when it has no namespace of its own (it is then in the stream's, which
    no resource offers as a feature).

    Read from the first start tag when it is written plainly, with its own
    C{xmlns} (L{tagNamespace}); otherwise (a prefix, a reference or a line
    break in the value, a C{>} in an attribute) by expat.
    """
    namespace = tagNamespace(inner[: inner.find(b">") + 1])
    return _firstNamespace(inner) if namespace is None else namespace


def tagNamespace(tag: bytes) -> str | None:
    """
    The namespace that C{tag}, a whole start tag up to its first C{>}
    (and whitespace before it), declares for itself when it is written
    plainly; C{None} when it takes a parser to tell.

    What it returns depends on the bytes of C{tag} alone, whatever
    follows them.
    """
    match = _TAG.fullmatch(tag)
    if match is None:
        return None
    value = match.group(1)
    return (match.group(2) if value is None else value).decode("utf-8", "replace")


class _Found(Exception):
    pass


def _firstNamespace(inner: bytes) -> str:
    """
    The namespace of the first element in C{inner}, read by expat.
    """
    found: list[str] = []

    def start(name: str, attributes: dict[str, str]) -> None:
        found.append(name.rpartition(" ")[0])
        if len(found) == 2:  # the first is the wrapper's
            raise _Found()

    parser = ParserCreate(namespace_separator=" ")
    parser.StartElementHandler = start
    try:
        parser.Parse(b"<i>" + inner + b"</i>", True)
    except (_Found, ExpatError):
        pass
    return found[1] if len(found) == 2 else ""


@implementer(IResourceSet)
class EligibleSet(ObservedSet):
    """
    The resources eligible for some requests: a plain set, filled by
    L{FeatureRouting}, over which a strategy is built.
    """

    def __init__(self, priority: Callable[[str], int], members: Iterable[str] = ()) -> None:
        super().__init__()
        self._priority = priority
        self._members = dict.fromkeys(members)

    def online(self) -> Collection[str]:
        return self._members.keys()

    def priority(self, resource: str) -> int:
        return self._priority(resource)

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, resource: str) -> bool:
        return resource in self._members

    def add(self, resource: str) -> None:
        self._members[resource] = None
        self._joined(resource)

    def remove(self, resource: str) -> None:
        del self._members[resource]
        self._left(resource)

    def priorityChanged(self, resource: str) -> None:
        self._priorityChanged(resource)


class IInfoQuerier(Interface):
    """
    Sends the component's own disco#info requests (the IQ router does).
    """

    def query(
        resource: str,
        payload: bytes,
        timeout: float,
        answered: Callable[[bytes | None], None],
    ) -> bool:
        """
        Send an IQ get with C{payload} to C{resource}, and call
        C{answered} once: with the payload of its result, or C{None} for
        an error, no answer within C{timeout} seconds, or C{resource}
        going away.

        @return: whether it was sent; if not, C{answered} is never called.
        """


class _Pending:
    """
    A C{ver} being learned: the resources that announce it, each with its
    caps C{node}, those asked already, and the one asked now.
    """

    __slots__ = ("announcers", "asked", "asking")

    def __init__(self) -> None:
        self.announcers: dict[str, str] = {}
        self.asked: set[str] = set()
        self.asking: str | None = None


class CapsDiscovery:
    """
    Learns the features a C{ver} stands for: from one resource that
    announces it, once, checked, and kept for every resource that
    announces the same.

    A resource announcing a C{ver} not known yet is asked for the
    disco#info of C{node#ver} (XEP-0115, 6.2), unless another resource has
    been asked for it already. The answer is checked against the C{ver}
    (XEP-0115, 5.4): an answer that does not hash to it is logged and
    rejected, and the next resource announcing it is asked, up to
    L{maxTries}; after that the C{ver} is rejected, and the resources that
    announce it are treated as announcing no caps. An error, a timeout or
    the resource going away make the next announcing resource be asked.

    The C{ver}s known are kept in a bounded cache (L{maxKnown}, the least
    recently announced forgotten first); the C{ver}s pending are at most
    one per resource online.

    @ivar learned: called with the resources announcing a C{ver} and its
        features once they are known (set by L{FeatureRouting}).
    @ivar querier: what sends the disco#info requests (set by the IQ
        router, which keeps them in its table of requests in flight).
    @ivar timeout: seconds a disco#info request may take.
    """

    log = Logger()
    maxKnown = 1000
    maxTries = 3
    timeout = 10.0

    def __init__(self) -> None:
        self.querier: IInfoQuerier | None = None
        self.learned: Callable[[list[str], frozenset[str]], None] = lambda resources, f: None
        #: Features by caps key; None for a rejected ver.
        self._known: OrderedDict[tuple[str, str], frozenset[str] | None] = OrderedDict()
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._waiting: dict[str, tuple[str, str]] = {}

    def announced(self, resource: str, caps: Caps | None) -> frozenset[str] | None:
        """
        C{resource} came online, or changed its caps, with C{caps}.

        @return: its features, or C{None} while they are unknown (no caps,
            a hash function not supported, a C{ver} rejected or being
            learned).
        """
        self.withdrawn(resource)
        if caps is None or not caps.verifiable:
            return None
        key = caps.key
        if key in self._known:
            self._known.move_to_end(key)
            return self._known[key]
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending()
        pending.announcers[resource] = caps.node
        self._waiting[resource] = key
        if pending.asking is None:
            self._ask(key, pending)
        return None

    def withdrawn(self, resource: str) -> None:
        """
        C{resource} went away, or no longer announces the caps it did.
        """
        key = self._waiting.pop(resource, None)
        if key is None:
            return
        pending = self._pending[key]
        del pending.announcers[resource]
        if not pending.announcers and pending.asking is None:
            del self._pending[key]

    def forgotten(self) -> None:
        """
        Every resource went away at once: the C{ver}s known are kept, the
        requests in flight end in their own time.
        """
        self._waiting.clear()
        for key in [key for key, p in self._pending.items() if p.asking is None]:
            del self._pending[key]
        for pending in self._pending.values():
            pending.announcers.clear()

    def _ask(self, key: tuple[str, str], pending: _Pending) -> None:
        """
        Ask the first announcing resource not asked yet, if any, within
        L{maxTries}. If the request cannot be sent (the table of requests
        in flight is full, or no connection is up), the next announcement
        of the C{ver} tries again.
        """
        assert self.querier is not None, "the IQ router sets the querier"
        if len(pending.asked) >= self.maxTries:
            return
        for resource, node in pending.announcers.items():
            if resource not in pending.asked:
                break
        else:
            return

        def answered(inner: bytes | None) -> None:
            self._answered(key, resource, inner)

        if self.querier.query(resource, infoQuery(node + "#" + key[1]), self.timeout, answered):
            pending.asked.add(resource)
            pending.asking = resource

    def _answered(self, key: tuple[str, str], resource: str, inner: bytes | None) -> None:
        """
        C{resource} answered the disco#info request for C{key} with
        C{inner}, or not at all (C{None}).
        """
        pending = self._pending[key]
        pending.asking = None
        features = None if inner is None else self._checked(key, resource, inner)
        if features is not None:
            self._learn(key, pending, features)
        elif len(pending.asked) >= self.maxTries:
            self.log.warn(
                "No valid disco#info for ver {ver} after {tries} tries: the resources "
                "announcing it serve every request",
                ver=key[1],
                tries=len(pending.asked),
            )
            self._learn(key, pending, None)
        elif pending.announcers:
            self._ask(key, pending)
        else:
            del self._pending[key]

    def _checked(self, key: tuple[str, str], resource: str, inner: bytes) -> frozenset[str] | None:
        """
        The features of the disco#info answer C{inner} if it hashes to the
        C{ver} of C{key}; else C{None}, and a line in the log.
        """
        try:
            info = parseInfo(inner)
            computed = verification(info, key[0])
        except IllFormed as e:
            computed = "nothing (%s)" % (e,)
        else:
            if computed == key[1]:
                return frozenset(info.features)
        self.log.warn(
            "Rejected the disco#info of {resource} for ver {ver}: it hashes to "
            "{computed}",
            resource=resource,
            ver=key[1],
            computed=computed,
        )
        return None

    def _learn(
        self, key: tuple[str, str], pending: _Pending, features: frozenset[str] | None
    ) -> None:
        """
        The C{ver} of C{key} stands for C{features} (C{None}: rejected).
        """
        del self._pending[key]
        self._known[key] = features
        if len(self._known) > self.maxKnown:
            self._known.popitem(last=False)
        for resource in pending.announcers:
            del self._waiting[resource]
        if features is not None:
            self.log.info(
                "Learned the {count} features of ver {ver}, announced by {resources} "
                "online resources",
                count=len(features),
                ver=key[1],
                resources=len(pending.announcers),
            )
            self.learned(list(pending.announcers), features)


@implementer(IPresenceIndex)
class FeatureRouting:
    """
    The resources eligible for each namespace, and a strategy over each
    set, built when a request first needs it.

    Kept over a base set of resources (those online and not draining):
    every resource of the base whose features are known is in the set of
    each namespace it advertises; every resource whose features are unknown
    is in all the sets, and in the one for the namespaces that nobody
    advertises. A set no resource advertises any more is dropped, with its
    strategy.

    A resource joining or leaving costs one step per namespace it
    advertises (or per set, while its features are unknown); choosing costs
    reading the payload's namespace, a lookup, and the strategy's choice.
    The namespace is read once per first tag written alike (L{maxTags} of
    them are remembered), then found by its bytes.

    @ivar maxTags: how many first tags of payloads are remembered with
        their namespace.
    """

    maxTags = 1024

    def __init__(
        self,
        base: Undrained,
        strategy: Callable[[IResourceSet], IStrategy],
        discovery: CapsDiscovery,
    ) -> None:
        self.base = base
        self.discovery = discovery
        self._strategy = strategy
        discovery.learned = self.learned
        self._unknown = EligibleSet(base.priority)
        self._unknownStrategy: IStrategy | None = None
        self._sets: dict[str, EligibleSet] = {}
        self._strategies: dict[str, IStrategy] = {}
        self._featuresOf: dict[str, frozenset[str]] = {}
        self._capsOf: dict[str, Caps | None] = {}
        self._tags: dict[bytes, str] = {}
        for resource in base.online():
            self.resourceOnline(resource)
        base.addObserver(self)

    def strategyFor(self, payload: bytes) -> IStrategy:
        """
        The strategy over the resources eligible for a request whose inner
        XML is C{payload}.
        """
        end = payload.find(b">") + 1
        tag = payload[:end]
        namespace = self._tags.get(tag)
        if namespace is None:
            namespace = tagNamespace(tag)
            if namespace is None:
                namespace = _firstNamespace(payload)
            else:
                if len(self._tags) >= self.maxTags:
                    self._tags.clear()
                self._tags[tag] = namespace
        strategy = self._strategies.get(namespace)
        if strategy is not None:
            return strategy
        members = self._sets.get(namespace)
        if members is not None:
            strategy = self._strategies[namespace] = self._strategy(members)
            return strategy
        if self._unknownStrategy is None:
            self._unknownStrategy = self._strategy(self._unknown)
        return self._unknownStrategy

    def offered(self) -> Collection[str]:
        """
        The namespaces some resource of the base advertises.
        """
        return self._sets.keys()

    # The base's events.

    def resourceOnline(self, resource: str) -> None:
        caps = self.base.caps(resource)
        self._capsOf[resource] = caps
        self._place(resource, self.discovery.announced(resource, caps))

    def resourceOffline(self, resource: str) -> None:
        self._unplace(resource)
        del self._capsOf[resource]
        self.discovery.withdrawn(resource)

    def presenceChanged(self, resource: str) -> None:
        if self.base.caps(resource) != self._capsOf[resource]:
            self._unplace(resource)
            self.resourceOnline(resource)

    def priorityChanged(self, resource: str) -> None:
        features = self._featuresOf.get(resource)
        if features is None:
            self._unknown.priorityChanged(resource)
            for members in self._sets.values():
                members.priorityChanged(resource)
        else:
            for namespace in features:
                self._sets[namespace].priorityChanged(resource)

    def forgotten(self) -> None:
        self.discovery.forgotten()
        self.close()
        self._unknown = EligibleSet(self.base.priority)
        self._unknownStrategy = None
        self._sets.clear()
        self._strategies.clear()
        self._featuresOf.clear()
        self._capsOf.clear()

    def close(self) -> None:
        """
        The strategies over the sets are no longer used: each stops
        following the table.
        """
        for strategy in [self._unknownStrategy, *self._strategies.values()]:
            if strategy is not None:
                strategy.close()

    def learned(self, resources: list[str], features: frozenset[str]) -> None:
        """
        The features of C{resources}, unknown until now, are known.
        """
        for resource in resources:
            if resource in self._unknown:
                self._unplace(resource)
                self._place(resource, features)

    # The sets.

    def _place(self, resource: str, features: frozenset[str] | None) -> None:
        if features is None:
            self._unknown.add(resource)
            for members in self._sets.values():
                members.add(resource)
            return
        self._featuresOf[resource] = features
        for namespace in features:
            offering = self._sets.get(namespace)
            if offering is None:
                offering = self._sets[namespace] = EligibleSet(
                    self.base.priority, self._unknown.online()
                )
            offering.add(resource)

    def _unplace(self, resource: str) -> None:
        features = self._featuresOf.pop(resource, None)
        if features is None:
            self._unknown.remove(resource)
            for members in self._sets.values():
                members.remove(resource)
            return
        for namespace in features:
            members = self._sets[namespace]
            members.remove(resource)
            if len(members) == len(self._unknown):
                # Nobody advertises it any more.
                del self._sets[namespace]
                strategy = self._strategies.pop(namespace, None)
                if strategy is not None:
                    strategy.close()


@dataclass
class FleetDispatch:
    """
    How a proxy chooses among the target's resources: the strategy over the
    resources that are not draining (L{eligible}), for every message and
    for requests when features are not routed by; and the routing of
    requests by feature over the same resources, if any.
    """

    eligible: Undrained
    strategy: IStrategy
    features: FeatureRouting | None = None

    def close(self) -> None:
        """
        Another dispatch takes over (a reload): stop following the
        resources and the table, so that this one can go.
        """
        self.eligible.close()
        self.strategy.close()
        if self.features is not None:
            self.features.close()


def fleetDispatch(
    resources: Resources,
    table: RequestTable,
    strategy: str,
    drainShow: str = "xa",
    routeByFeatures: bool = False,
) -> FleetDispatch:
    """
    The strategy named C{strategy} over the resources that are not
    draining and, with C{routeByFeatures}, the routing of requests by
    feature over the same resources.
    """
    eligible = Undrained(resources, drainShow)
    factory = STRATEGIES[strategy]
    chosen = factory(eligible, table)
    features = None
    if routeByFeatures:
        over: Callable[[IResourceSet], IStrategy]
        if isinstance(chosen, StickyStrategy):
            # Every eligible set is within the undrained resources: its
            # choices can be read from their ring, so that a resource
            # joining or leaving moves one ring, not one per namespace.
            sticky = chosen
            over = lambda members: StickyStrategy(members, table, within=sticky)  # noqa: E731
        else:
            over = lambda members: factory(members, table)  # noqa: E731
        features = FeatureRouting(eligible, over, CapsDiscovery())
    return FleetDispatch(eligible, chosen, features)
