"""
The target's online resources, learned from its presence.

The component subscribes to the presence of the target (the implementing
client's account) and keeps the set of its available resources. RFC 6121
gives the rules followed here: presence subscription (section 3), presence
probes (section 4.3) and presence broadcast (sections 4.4 and 4.5).
"""

from collections.abc import Collection
from functools import lru_cache

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.words.protocols.jabber.component import NS_COMPONENT_ACCEPT
from twisted.words.protocols.jabber.jid import JID
from wokkel.xmppim import PresenceProtocol
from zope.interface import Interface, implementer

from client_proxy.caps import CAPS_NS, Caps
from client_proxy.fastpath import childElements, takePresence
from client_proxy.jat import bare

#: A child element of a stanza: its namespace, local name, attributes and
#: own text.
Child = tuple[str, str, dict[str, str], str]


class IResourceObserver(Interface):
    """
    Told when a resource of the target comes online or goes offline.
    """

    def resourceOnline(resource: str) -> None:
        """
        C{resource} (a full JID) became available.
        """

    def resourceOffline(resource: str) -> None:
        """
        C{resource} (a full JID) is no longer available.
        """


class IResourceIndex(IResourceObserver):
    """
    A structure kept over a set of resources (a dispatch strategy's): told
    of every change, including those the other observers need not hear of.
    """

    def priorityChanged(resource: str) -> None:
        """
        C{resource}, in the set, announced another presence priority.
        """

    def forgotten() -> None:
        """
        Every resource left the set at once, silently (the stream is gone):
        start again from an empty set.
        """


class IPresenceIndex(IResourceIndex):
    """
    An index that also follows what a resource's presence says beyond its
    priority: its C{<show/>} and its entity capabilities (XEP-0115).
    """

    def presenceChanged(resource: str) -> None:
        """
        C{resource}, in the set, announced another show or other caps.
        """


class IResourceSet(Interface):
    """
    A set of the target's resources that tells its observers of every
    change, so that they can keep structures of their own over it (the
    dispatch strategies do).
    """

    def addObserver(observer: IResourceObserver) -> None:
        """
        Tell C{observer} of every resource that joins or leaves the set
        from now on; of every change of priority, and of the set being
        forgotten, too, if it provides L{IResourceIndex}; and of every
        change of show or caps if it provides L{IPresenceIndex}.
        """

    def online() -> Collection[str]:
        """
        The resources in the set, a live view: in the order they joined.
        """

    def priority(resource: str) -> int:
        """
        The presence priority of C{resource}, which is in the set.
        """


class ObservedSet:
    """
    What a set of resources does for its observers: the indexes first, so
    that the others find them up to date.
    """

    def __init__(self) -> None:
        self._observers: list[IResourceObserver] = []
        self._indexes: list[IResourceIndex] = []
        self._presenceIndexes: list[IPresenceIndex] = []

    def addObserver(self, observer: IResourceObserver) -> None:
        if IPresenceIndex.providedBy(observer):
            self._presenceIndexes.append(observer)
        if IResourceIndex.providedBy(observer):
            self._indexes.append(observer)
        else:
            self._observers.append(observer)

    def removeObserver(self, observer: IResourceObserver) -> None:
        """
        Tell C{observer}, given to L{addObserver}, of nothing more.
        """
        self._presenceIndexes = [i for i in self._presenceIndexes if i is not observer]
        self._indexes = [i for i in self._indexes if i is not observer]
        self._observers = [o for o in self._observers if o is not observer]

    def _joined(self, resource: str) -> None:
        for index in self._indexes:
            index.resourceOnline(resource)
        for observer in self._observers:
            observer.resourceOnline(resource)

    def _left(self, resource: str) -> None:
        for index in self._indexes:
            index.resourceOffline(resource)
        for observer in self._observers:
            observer.resourceOffline(resource)

    def _priorityChanged(self, resource: str) -> None:
        for index in self._indexes:
            index.priorityChanged(resource)

    def _presenceChanged(self, resource: str) -> None:
        for index in self._presenceIndexes:
            index.presenceChanged(resource)

    def _forgotten(self) -> None:
        for index in self._indexes:
            index.forgotten()


@implementer(IResourceSet)
class Resources(ObservedSet):
    """
    The online resources of the target, with what their presence says:
    priority, show and entity capabilities.

    Pure state, free of I/O. Every change costs O(1) plus what its
    observers do: nothing here is rebuilt from all the resources, so that a
    target with thousands of resources (a fleet of workers) joining and
    leaving stays cheap.
    """

    def __init__(self) -> None:
        super().__init__()
        self._priorities: dict[str, int] = {}
        #: The show and caps of the resources that announce either.
        self._details: dict[str, tuple[str | None, Caps | None]] = {}

    def online(self) -> Collection[str]:
        """
        The full JIDs of the online resources, in the order they came
        online: a live view, which costs nothing to get.
        """
        return self._priorities.keys()

    def priority(self, resource: str) -> int:
        return self._priorities[resource]

    def show(self, resource: str) -> str | None:
        """
        The C{<show/>} of C{resource}'s presence (RFC 6121, 4.7.2.1), or
        C{None} without one.
        """
        details = self._details.get(resource)
        return None if details is None else details[0]

    def caps(self, resource: str) -> Caps | None:
        """
        The entity capabilities C{resource} announces, if any.
        """
        details = self._details.get(resource)
        return None if details is None else details[1]

    def __contains__(self, resource: str) -> bool:
        return resource in self._priorities

    def __len__(self) -> int:
        return len(self._priorities)

    def available(
        self,
        resource: str,
        priority: int = 0,
        show: str | None = None,
        caps: Caps | None = None,
    ) -> None:
        """
        C{resource} sent available presence; a repeated one may change the
        priority, the show or the caps.
        """
        old = self._priorities.get(resource)
        details = None if show is None and caps is None else (show, caps)
        oldDetails = self._details.get(resource)
        if old == priority and oldDetails == details:
            return
        self._priorities[resource] = priority
        if details is None:
            self._details.pop(resource, None)
        else:
            self._details[resource] = details
        if old is None:
            self._joined(resource)
            return
        if old != priority:
            self._priorityChanged(resource)
        if oldDetails != details:
            self._presenceChanged(resource)

    def unavailable(self, resource: str) -> None:
        """
        C{resource} sent unavailable presence.
        """
        if self._priorities.pop(resource, None) is None:
            return
        self._details.pop(resource, None)
        self._left(resource)

    def clear(self) -> None:
        """
        Every resource went offline at once: the indexes are emptied, then
        the other observers hear of each one, so that none is chosen in
        between.
        """
        gone = list(self._priorities)
        self.forget()
        for resource in gone:
            for observer in self._observers:
                observer.resourceOffline(resource)

    def forget(self) -> None:
        """
        Drop every resource without telling the observers but the indexes.

        Used when the stream is gone: nothing can be sent about them any
        more, and they are learned again on the next connection.
        """
        self._priorities.clear()
        self._details.clear()
        self._forgotten()


@implementer(IResourceSet, IPresenceIndex)
class Undrained(ObservedSet):
    """
    The online resources that are not draining: those a new request or
    message may go to.

    A resource whose presence carries the show C{drainShow} (C{xa} by
    default) is draining: it is about to leave, and gets nothing new, while
    what it holds is still answered as usual. Another show, or none, makes
    it eligible again at once. Strategies built over this set choose among
    the eligible resources only, and see a resource that starts or stops
    draining leave or join.

    @ivar drainShow: the show that marks a resource draining.
    """

    log = Logger()

    def __init__(self, resources: Resources, drainShow: str = "xa") -> None:
        super().__init__()
        self.resources = resources
        self.drainShow = drainShow
        self._members: dict[str, None] = {}
        for resource in resources.online():
            self.resourceOnline(resource)
        resources.addObserver(self)

    def close(self) -> None:
        """
        The set is no longer used: stop following the resources.
        """
        self.resources.removeObserver(self)

    def online(self) -> Collection[str]:
        return self._members.keys()

    def priority(self, resource: str) -> int:
        return self.resources.priority(resource)

    def caps(self, resource: str) -> Caps | None:
        return self.resources.caps(resource)

    def __contains__(self, resource: str) -> bool:
        return resource in self._members

    def __len__(self) -> int:
        return len(self._members)

    def resourceOnline(self, resource: str) -> None:
        if self.resources.show(resource) == self.drainShow:
            self.log.info("Resource draining: {resource}", resource=resource)
        else:
            self._members[resource] = None
            self._joined(resource)

    def resourceOffline(self, resource: str) -> None:
        if resource in self._members:
            del self._members[resource]
            self._left(resource)

    def priorityChanged(self, resource: str) -> None:
        if resource in self._members:
            self._priorityChanged(resource)

    def presenceChanged(self, resource: str) -> None:
        draining = self.resources.show(resource) == self.drainShow
        if resource not in self._members:
            if not draining:
                self.log.info("Resource no longer draining: {resource}", resource=resource)
                self.resourceOnline(resource)
        elif draining:
            self.log.info("Resource draining: {resource}", resource=resource)
            self.resourceOffline(resource)
        else:
            self._presenceChanged(resource)

    def forgotten(self) -> None:
        self._members.clear()
        self._forgotten()


def _details(children: list[Child], namespace: str) -> tuple[int, str | None, Caps | None]:
    """
    What an available presence in C{namespace} says of its resource, from
    its C{children}, as the arguments of
    L{TargetPresenceHandler.availableFrom} after the sender: its priority
    (RFC 6121, 4.7.2.3: 0 without one, or when it is not a number), its
    show (4.7.2.1), and its entity capabilities (XEP-0115: a C{<c/>} with
    a C{hash}, a C{node} and a C{ver}; one without a C{hash}, of the legacy
    format, counts as none).
    """
    priority, show, caps = 0, None, None
    for childNamespace, name, attributes, text in children:
        if name == "priority" and childNamespace == namespace:
            try:
                priority = int(text)
            except ValueError:
                pass
        elif name == "show" and childNamespace == namespace:
            show = text.strip()
        elif name == "c" and childNamespace == CAPS_NS:
            hash, node, ver = (attributes.get(a) for a in ("hash", "node", "ver"))
            if hash and node and ver:
                caps = Caps(hash, node, ver)
    return priority, show, caps


@lru_cache(maxsize=4096)
def _detailsOf(inner: bytes, namespace: str) -> tuple[int, str | None, Caps | None] | None:
    """
    L{_details} of a presence in C{namespace} whose inner XML is C{inner},
    or C{None} if it is not well-formed on its own. In a storm the same
    bytes come again and again (every resource's presence after each
    approval, its C{<delay/>} stamp included), so the answers for the last
    few thousand are kept.
    """
    children = childElements(inner, namespace) if inner.strip() else []
    return None if children is None else _details(children, namespace)


class TargetPresenceHandler(PresenceProtocol):
    """
    Subscribes to the target's presence and tracks its resources.

    On every authenticated stream the component asks for a subscription to
    the target (RFC 6121, 3.1.1); the target has to approve it once. Once the
    subscription exists, signalled by C{subscribed} (which the target's
    server also sends on its own behalf when the subscription already
    existed, RFC 6121, 3.1.3), the component probes (RFC 6121, 4.3) to learn
    the resources that are online. The probe must not come earlier: Prosody
    answers a probe for a pending subscription with C{unsubscribed}, which
    cancels the request.

    When the target refuses or cancels the subscription, the component asks
    again later, waiting twice as long after each refusal in a row, so that
    a client that refuses automatically is not flooded; it asks again at
    once when the target asks for the component's presence, a sign that it
    is there and willing.

    Presence from anyone else is ignored here: it is about the component's
    own presence, which L{client_proxy.contacts.ComponentPresenceHandler}
    handles.

    @ivar askAgainAfter: seconds before asking again after a first refusal.
    @ivar askAgainAtMost: the longest wait between two requests.
    """

    log = Logger()
    askAgainAfter = 60.0
    askAgainAtMost = 3600.0

    def __init__(
        self, component: JID, target: JID, resources: Resources, clock: IReactorTime
    ) -> None:
        super().__init__()
        self.component = component
        self.target = target
        self.resources = resources
        self.clock = clock
        self._target = target.userhost()
        self.hasSubscription = False
        self._refusals = 0
        self._askAgain: IDelayedCall | None = None

    def connectionInitialized(self) -> None:
        super().connectionInitialized()
        takePresence(self.xmlstream, self.presenceReceived)
        self.askForSubscription()

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self._cancelAskAgain()
        self.hasSubscription = False
        self.resources.forget()

    def askForSubscription(self) -> None:
        """
        RFC 6121, 3.1.1: ask the target for a presence subscription.
        """
        self._cancelAskAgain()
        self.log.info(
            "Asking {target} for a presence subscription", target=self.target.full()
        )
        self.subscribe(self.target, sender=self.component)

    def _cancelAskAgain(self) -> None:
        if self._askAgain is not None and self._askAgain.active():
            self._askAgain.cancel()
        self._askAgain = None

    def _onPresence(self, element) -> None:
        """
        Presence from the target is tracked; presence from others is left
        to the component's contact handler.

        Available and unavailable presence is read here, straight from the
        element, with the sender's address as the server wrote it (see
        L{client_proxy.jat}): it comes by the thousand when a fleet of
        resources approves the subscription, since the server sends the
        presence of every online resource after each approval (RFC 6121,
        3.1.5). The rest goes through Wokkel's parsing.

        This overrides a private method of Wokkel's L{PresenceProtocol}
        because it has no public hook before its parsing: it observes
        C{/presence} with C{_onPresence} itself, and its public methods
        (C{availableReceived}, ...) are called only once every stanza, the
        other entities' included, has been parsed into Wokkel's objects.
        """
        sender = element.getAttribute("from", "")
        if bare(sender) != self._target:
            return
        presenceType = element.getAttribute("type")
        if presenceType is None:
            children = [
                (child.uri, child.name, child.attributes, str(child))
                for child in element.elements()
            ]
            self.availableFrom(sender, *_details(children, element.uri))
        elif presenceType == "unavailable":
            self.unavailableFrom(sender)
        else:
            super()._onPresence(element)

    def presenceReceived(self, presence: dict[str, str], inner: bytes) -> bool:
        """
        Presence as bytes, from the fast path
        (L{client_proxy.fastpath.takePresence}): the target's available
        and unavailable presence is read here as L{_onPresence} reads it
        from an element, without building one; the rest is declined, and
        reaches L{_onPresence} and the other handlers as an element.

        @return: whether it was taken.
        """
        sender = presence.get("from", "")
        if bare(sender) != self._target:
            return False
        presenceType = presence.get("type")
        if presenceType == "unavailable":
            self.unavailableFrom(sender)
            return True
        if presenceType is not None:
            return False
        details = _detailsOf(inner, presence.get("xmlns", NS_COMPONENT_ACCEPT))
        if details is None:
            return False
        self.availableFrom(sender, *details)
        return True

    def availableFrom(
        self,
        sender: str,
        priority: int = 0,
        show: str | None = None,
        caps: Caps | None = None,
    ) -> None:
        """
        Available presence (RFC 6121, 4.2 and 4.4): a resource is online,
        or announces another priority, show or caps. Nothing is logged for
        a resource already known: the same presence may come many times.
        """
        if "/" not in sender:
            return
        if sender not in self.resources:
            self.log.info("Resource online: {resource}", resource=sender)
        self.resources.available(sender, priority, show, caps)

    def unavailableFrom(self, sender: str) -> None:
        """
        Unavailable presence (RFC 6121, 4.5): from a resource, it is
        offline; from the bare JID, the answer to a probe (or a
        subscription request) while the target has no available resource
        (4.3.2).
        """
        if "/" not in sender:
            if self.resources:
                self.log.info("The target went offline")
            self.resources.clear()
        elif sender in self.resources:
            self.log.info("Resource offline: {resource}", resource=sender)
            self.resources.unavailable(sender)

    def errorReceived(self, presence) -> None:
        """
        RFC 6121, 4.3.1: an error presence from the target means its
        presence cannot be known; forget every resource.
        """
        self.log.warn(
            "Presence error from {sender}: {error}; no resource is reachable",
            sender=presence.sender.full(),
            error=presence.exception,
        )
        self.resources.clear()

    def subscribedReceived(self, presence) -> None:
        """
        The subscription exists: probe for the resources online (RFC 6121,
        4.3), once for each change of the subscription's state.

        Each resource of the target that approves the request sends a
        C{subscribed}, and the server answers each one with the presence of
        every online resource: a fleet of N workers that all approve
        brings N**2 presence stanzas. A probe for each approval would bring
        as many again; the repeated approvals change nothing, and are not
        even logged.
        """
        if self.hasSubscription:
            return
        self.log.info(
            "{target} approved the presence subscription; probing its resources",
            target=self.target.full(),
        )
        self.hasSubscription = True
        self._refusals = 0
        self._cancelAskAgain()
        self.probe(self.target, sender=self.component)

    def subscribeReceived(self, presence) -> None:
        """
        The target asks for the component's presence: approve it (RFC 6121,
        3.1.5), and ask for the target's at once if the component has not
        got it.
        """
        self.subscribed(self.target, sender=self.component)
        if not self.hasSubscription:
            self.askForSubscription()

    def unsubscribedReceived(self, presence) -> None:
        """
        RFC 6121, 3.2 and 3.3: the subscription was refused or cancelled;
        the target's resources can no longer be known.
        """
        self.hasSubscription = False
        self._refusals += 1
        delay = min(
            self.askAgainAfter * 2 ** (self._refusals - 1), self.askAgainAtMost
        )
        self.log.warn(
            "{target} refused or cancelled the presence subscription; "
            "no resource is reachable until it approves one; asking again "
            "in {delay:.0f} s",
            target=self.target.full(),
            delay=delay,
        )
        self.resources.clear()
        self._cancelAskAgain()
        self._askAgain = self.clock.callLater(delay, self.askForSubscription)
