"""
The component as a contact: users subscribe to its JID and see it available
exactly while at least one resource of the target is online.

The component plays both the contact's client and the contact's server of
RFC 6121 for its own JID: it approves subscription requests, answers
presence probes, and tells its subscribers when its availability changes.
The subscribers are kept in an L{ISubscriberStore}, an SQLite database when
a state file is configured, so that they survive restarts. Presence from
users is never forwarded to the implementing client, and never answered
with an error.

Anyone on the federated network can ask for a subscription, so the store is
capped, in total and per domain, and the requests of each domain are
rate-limited (L{SubscriberLimits}); who may subscribe at all is the
L{AccessPolicy}'s to say. What remote users cause is counted in a L{Tally},
never logged a line each.
"""

from collections import OrderedDict

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from client_proxy.access import AccessPolicy
from client_proxy.jat import bare, domain
from client_proxy.presence import IResourceObserver, Resources
from client_proxy.quiet import Tally
from client_proxy.store import ISubscriberStore


class DomainRate:
    """
    A token bucket per domain: a domain may do something L{rate} times a
    second on average, and L{burst} times at once.

    The memory is bounded whatever the number of domains: at most
    L{maxDomains} buckets are kept, and the bucket of the domain heard from
    least recently goes first. A domain whose bucket went starts again with
    a full one; that needs L{maxDomains} other domains heard from since, and
    the subscriber caps hold in any case.
    """

    rate = 10.0
    burst = 100.0
    maxDomains = 10_000

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        #: domain -> (tokens, when they were counted), least recent first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allows(self, host: str) -> bool:
        """
        Whether C{host} may do it once more now; if so, that counts.
        """
        now = self.clock.seconds()
        tokens, then = self._buckets.pop(host, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        allowed = tokens >= 1
        self._buckets[host] = (tokens - 1 if allowed else tokens, now)
        if len(self._buckets) > self.maxDomains:
            self._buckets.popitem(last=False)
        return allowed


class SubscriberLimits:
    """
    Whether a new subscriber may be stored: at most C{maxSubscribers} in
    all, at most C{maxPerDomain} of one domain, and new subscribers of one
    domain no faster than its L{DomainRate} allows.
    """

    def __init__(
        self, clock: IReactorTime, maxSubscribers: int = 100_000, maxPerDomain: int = 10_000
    ) -> None:
        self.maxSubscribers = maxSubscribers
        self.maxPerDomain = maxPerDomain
        self.rate = DomainRate(clock)

    def refusal(self, subscribers: ISubscriberStore, jid: str) -> str | None:
        """
        Why the bare JID C{jid} may not be added to C{subscribers}, or
        C{None} if it may. Only a JID that may is counted against its
        domain's rate.
        """
        if len(subscribers) >= self.maxSubscribers:
            return "subscriber limit"
        host = domain(jid)
        if subscribers.countDomain(host) >= self.maxPerDomain:
            return "per-domain subscriber limit"
        if not self.rate.allows(host):
            return "per-domain rate limit"
        return None


@implementer(IResourceObserver)
class ComponentPresenceHandler(XMPPHandler):
    """
    The component's own presence, for the users subscribed to it.

    The component is available exactly while at least one resource of the
    target is online. It handles presence from anyone but the target (the
    target's presence is
    L{client_proxy.presence.TargetPresenceHandler}'s) addressed to the
    component's JID (a resource there is ignored, RFC 6121, 3.1.3), and
    follows the rules of RFC 6121 for a contact and its server:

      - C{subscribe}: approved (3.1.5), then the component's current
        presence is sent to the new subscriber (3.1.6). Refused with
        C{unsubscribed} (3.2) when the L{SubscriberLimits} say so, or the
        L{AccessPolicy} refuses the user; nothing is stored then, and the
        user may ask again later. A subscriber asking again is approved
        whatever the limits: nothing new is stored.
      - C{unsubscribe}: the user cancels its subscription (3.3); the
        component forgets the subscriber, sends it unavailable presence
        (3.3.3) and confirms with C{unsubscribed}.
      - C{unsubscribed}, C{subscribed}: about the user's own presence,
        which the component never asks for; ignored.
      - C{probe} (4.3.2): a subscriber gets the current presence, available
        or unavailable; anyone else, and anyone the policy refuses, gets
        C{unsubscribed}, as 4.3.2 says a contact's server SHOULD answer a
        probe from a user without a subscription: the user's server then
        drops a subscription the component no longer knows (a state file
        lost, or none configured).
      - available and unavailable presence: ignored, neither forwarded to
        the implementing client nor answered with an error.
      - C{error}: ignored (RFC 6120, 8.3.1: an error is never answered).

    A user the policy refuses is not a subscriber: if the store held it
    (the lists changed since), it is removed when it asks again or probes,
    and it is never told the component's presence. Its other presence is
    ignored.

    Changes are broadcast (4.4.2, 4.5.2): when the number of online
    resources goes from 0 to 1, every subscriber gets available presence;
    when it goes back to 0, unavailable presence. Presence always comes from
    the component's bare JID, to the subscriber's bare JID.

    On a new stream nothing is known about the target until its presence
    arrives, a few round trips later; announcing "unavailable" at once would
    make every subscriber see the component go offline and back on every
    reconnection. So the component says nothing for L{settleDelay} seconds:
    a resource coming online in that time is announced as it happens; if
    none did, the subscribers are told the component is unavailable, which
    corrects what they were told before a crash. Nothing is sent when the
    subscribers already had the state from an earlier stream of the same
    process. When the proxy stops, L{stopping} tells them the component is
    unavailable. The subscribers are read from the state file again on
    every stream, for a standby instance sharing it with the active one.

    Subscriptions accepted, ended and refused, and probes refused, are
    counted in the L{Tally} and summarised, never logged one line each.

    @ivar settleDelay: seconds to wait, on a new stream, for the target's
        resources before announcing the component unavailable.
    @param access: who may subscribe; by default, everyone.
    @param limits: the caps and rate; by default, L{SubscriberLimits}'s.
    @param tally: where what remote users cause is counted; by default one
        of this handler's own.
    """

    log = Logger()
    settleDelay = 5.0

    def __init__(
        self,
        component: JID,
        target: JID,
        resources: Resources,
        subscribers: ISubscriberStore,
        clock: IReactorTime,
        access: AccessPolicy | None = None,
        limits: SubscriberLimits | None = None,
        tally: Tally | None = None,
    ) -> None:
        super().__init__()
        self.component = component.userhost()
        self.target = target.userhost()
        self.resources = resources
        self.subscribers = subscribers
        self.clock = clock
        self.access = access or AccessPolicy(self.target)
        self.limits = limits or SubscriberLimits(clock)
        self.tally = tally or Tally(self.component, clock, self.log)
        #: What every subscriber was last told: available (C{True}),
        #: unavailable (C{False}), or nothing yet in this process (C{None}).
        self.announced: bool | None = None
        self._settle: IDelayedCall | None = None
        resources.addObserver(self)

    def isAvailable(self) -> bool:
        """
        Whether the component is available: a resource of the target is
        online.
        """
        return len(self.resources) > 0

    # The stream

    def connectionInitialized(self) -> None:
        self.xmlstream.addObserver("/presence", self.onPresence)
        self.subscribers.reload()
        self._cancelSettle()
        self._settle = self.clock.callLater(self.settleDelay, self.settled)

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self._cancelSettle()

    def _cancelSettle(self) -> None:
        if self._settle is not None and self._settle.active():
            self._settle.cancel()
        self._settle = None

    def settled(self) -> None:
        """
        The target's resources had time to be learned: tell the subscribers
        the current state, unless they know it already.
        """
        self._settle = None
        self.announce()

    def stopping(self) -> None:
        """
        The proxy stops: tell the subscribers the component is unavailable
        (RFC 6121, 4.5.2), unless they know it already; log what was
        counted, and write the subscribers.
        """
        self._cancelSettle()
        if self.announced is not False:
            self._broadcast(False)
        self.tally.flush()
        self.subscribers.flush()

    # The target's resources (IResourceObserver)

    def resourceOnline(self, resource: str) -> None:
        self.announce()

    def resourceOffline(self, resource: str) -> None:
        self.announce()

    def announce(self) -> None:
        """
        RFC 6121, 4.4.2 and 4.5.2: send the component's presence to every
        subscriber if it is not what they were last told.
        """
        available = self.isAvailable()
        if available != self.announced:
            self._broadcast(available)

    def _broadcast(self, available: bool) -> None:
        self.announced = available
        self.log.info(
            "The component is {state}: telling {count} subscribers",
            state="available" if available else "unavailable",
            count=len(self.subscribers),
        )
        for subscriber in self.subscribers:
            if self.access.allows(subscriber):
                self.sendPresence(subscriber, available)

    # Presence sent

    def sendPresence(self, recipient: str, available: bool | None = None) -> None:
        """
        Send the component's presence to C{recipient}: the current one
        unless C{available} says which.
        """
        if available is None:
            available = self.isAvailable()
        self._send(recipient, None if available else "unavailable")

    def _send(self, recipient: str, type: str | None) -> None:
        presence = domish.Element((None, "presence"))
        presence["from"] = self.component
        presence["to"] = recipient
        if type is not None:
            presence["type"] = type
        self.send(presence)

    # Presence received

    def onPresence(self, element: domish.Element) -> None:
        """
        Handle presence from users to the component's JID; leave the
        target's presence to L{TargetPresenceHandler}, and ignore presence
        to the other addresses of the component's domain.
        """
        sender = element.getAttribute("from", "")
        user = bare(sender)
        if not user or user == self.target:
            return
        if bare(element.getAttribute("to", "")) != self.component:
            return
        kind = element.getAttribute("type")
        if not self.access.allows(user):
            self.refusedPresenceReceived(user, kind)
        elif kind == "subscribe":
            self.subscribeReceived(user)
        elif kind == "unsubscribe":
            self.unsubscribeReceived(user)
        elif kind == "probe":
            self.probeReceived(sender)

    def refusedPresenceReceived(self, user: str, kind: str | None) -> None:
        """
        Presence from a user the policy refuses: a C{subscribe} or a
        C{probe} gets C{unsubscribed}, and the user is no subscriber any
        more; anything else is ignored.
        """
        if kind in ("subscribe", "probe"):
            self.subscribers.remove(user)
            self._send(user, "unsubscribed")
            noun = "subscriptions" if kind == "subscribe" else "probes"
            self.tally.count("refused", noun, "not allowed", user)

    def subscribeReceived(self, user: str) -> None:
        """
        RFC 6121, 3.1.5: approve the subscription, then (3.1.6) send the
        current presence to the new subscriber; or, past the limits,
        refuse it (3.2).
        """
        if user not in self.subscribers:
            refusal = self.limits.refusal(self.subscribers, user)
            if refusal is not None:
                self.tally.count("refused", "subscriptions", refusal, user)
                self._send(user, "unsubscribed")
                return
            self.subscribers.add(user)
            self.tally.count("accepted", "subscriptions", "new subscribers", user)
        self._send(user, "subscribed")
        self.sendPresence(user)

    def unsubscribeReceived(self, user: str) -> None:
        """
        RFC 6121, 3.3.3: the user cancels its subscription; it gets
        unavailable presence, and the cancellation is confirmed.
        """
        if self.subscribers.remove(user):
            self.tally.count("ended", "subscriptions", "unsubscribed", user)
        self._send(user, "unavailable")
        self._send(user, "unsubscribed")

    def probeReceived(self, sender: str) -> None:
        """
        RFC 6121, 4.3.2: a subscriber gets the current presence, available
        or unavailable; anyone else gets C{unsubscribed}.
        """
        user = bare(sender)
        if user in self.subscribers:
            self.sendPresence(sender)
        else:
            self.tally.count("refused", "probes", "not a subscriber", user)
            self._send(user, "unsubscribed")
