"""
The target's online resources, learned from its presence.

The component subscribes to the presence of the target (the implementing
client's account) and keeps the set of its available resources. RFC 6121
gives the rules followed here: presence subscription (section 3), presence
probes (section 4.3) and presence broadcast (sections 4.4 and 4.5).
"""

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.words.protocols.jabber.jid import JID
from wokkel.xmppim import PresenceProtocol
from zope.interface import Interface

from client_proxy.jat import bare


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


class Resources:
    """
    The online resources of the target, with their presence priorities.

    Pure state, free of I/O. Resources are kept in the order they came
    online; L{online} is a tuple rebuilt only when the set changes, since it
    is read for every request and changes rarely.
    """

    def __init__(self) -> None:
        self._priorities: dict[str, int] = {}
        self._online: tuple[str, ...] = ()
        self._observers: list[IResourceObserver] = []

    def addObserver(self, observer: IResourceObserver) -> None:
        self._observers.append(observer)

    def online(self) -> tuple[str, ...]:
        """
        The full JIDs of the online resources.
        """
        return self._online

    def priority(self, resource: str) -> int:
        return self._priorities[resource]

    def __contains__(self, resource: str) -> bool:
        return resource in self._priorities

    def __len__(self) -> int:
        return len(self._priorities)

    def available(self, resource: str, priority: int = 0) -> None:
        """
        C{resource} sent available presence; a repeated one updates the
        priority.
        """
        isNew = resource not in self._priorities
        self._priorities[resource] = priority
        if isNew:
            self._online = tuple(self._priorities)
            for observer in self._observers:
                observer.resourceOnline(resource)

    def unavailable(self, resource: str) -> None:
        """
        C{resource} sent unavailable presence.
        """
        if self._priorities.pop(resource, None) is None:
            return
        self._online = tuple(self._priorities)
        for observer in self._observers:
            observer.resourceOffline(resource)

    def clear(self) -> None:
        """
        Every resource went offline at once: the observers hear of each one
        once none is online any more, so that none is chosen in between.
        """
        gone = self._online
        self.forget()
        for resource in gone:
            for observer in self._observers:
                observer.resourceOffline(resource)

    def forget(self) -> None:
        """
        Drop every resource without telling the observers.

        Used when the stream is gone: nothing can be sent about them any
        more, and they are learned again on the next connection.
        """
        self._priorities.clear()
        self._online = ()


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
        self.hasSubscription = False
        self._refusals = 0
        self._askAgain = None

    def connectionInitialized(self) -> None:
        super().connectionInitialized()
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
        """
        if bare(element.getAttribute("from", "")) == self.target.userhost():
            super()._onPresence(element)

    def availableReceived(self, presence) -> None:
        if presence.sender.resource is None:
            return
        resource = presence.sender.full()
        if resource not in self.resources:
            self.log.info("Resource online: {resource}", resource=resource)
        self.resources.available(resource, presence.priority)

    def unavailableReceived(self, presence) -> None:
        if presence.sender.resource is None:
            # RFC 6121, 4.3.2: the answer to a probe (or a subscription
            # request) while the target has no available resource.
            if self.resources:
                self.log.info("The target went offline")
            self.resources.clear()
        elif presence.sender.full() in self.resources:
            self.log.info("Resource offline: {resource}", resource=presence.sender.full())
            self.resources.unavailable(presence.sender.full())

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
