"""
The component as a contact: users subscribe to its JID and see it available
exactly while at least one resource of the target is online.

The component plays both the contact's client and the contact's server of
RFC 6121 for its own JID: it approves every subscription request, answers
presence probes, and tells its subscribers when its availability changes.
The subscribers are kept in L{Subscribers}, an SQLite database when a state
file is configured, so that they survive restarts. Presence from users is
never forwarded to the implementing client, and never answered with an
error.
"""

import sqlite3
from collections.abc import Iterator

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.words.protocols.jabber.jid import JID
from wokkel.xmppim import PresenceProtocol
from zope.interface import implementer

from client_proxy.jat import bare
from client_proxy.presence import IResourceObserver, Resources

#: The value of a state file that stands for no file: nothing persists.
IN_MEMORY = ":memory:"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS subscribers ("
    " component TEXT NOT NULL,"
    " jid TEXT NOT NULL,"
    " PRIMARY KEY (component, jid))"
)


class StateFileError(Exception):
    """
    The subscriber database cannot be opened, read or written.
    """


class Subscribers:
    """
    The bare JIDs subscribed to the component's presence.

    They are kept in memory and, when C{path} names a file, written through
    to an SQLite database at every change, so that a new L{Subscribers} on
    the same file (after a restart) knows them. Rows are keyed by the
    component's JID too: several proxies may share one file.

    @param path: the database file, created if missing; C{None}, C{""} or
        C{":memory:"} for no file (the subscribers are forgotten when the
        process ends).
    @param component: the JID of the component whose subscribers these are.
    @raise StateFileError: the file cannot be opened, is not an SQLite
        database, or cannot be written.
    """

    log = Logger()

    def __init__(self, path: str | None = None, component: str = "") -> None:
        self.path = None if path in (None, "", IN_MEMORY) else path
        self.component = component
        try:
            self._db = sqlite3.connect(self.path or IN_MEMORY, isolation_level=None)
            try:
                self._db.execute(_SCHEMA)
                # Take the write lock once: a read-only file fails now, with
                # the configuration, rather than at the first subscription.
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("ROLLBACK")
                rows = self._db.execute(
                    "SELECT jid FROM subscribers WHERE component = ?", (component,)
                ).fetchall()
            except sqlite3.Error:
                self._db.close()
                raise
        except sqlite3.Error as e:
            raise StateFileError("cannot use %s as the subscriber database: %s" % (path, e)) from e
        self._jids: set[str] = {jid for (jid,) in rows}

    def reload(self) -> None:
        """
        Read the subscribers from the file again: another process may have
        changed them (a standby instance taking over from the active one,
        both with the same state file). A failure is logged, and the
        subscribers known in memory are kept.
        """
        if self.path is None:
            return
        try:
            rows = self._db.execute(
                "SELECT jid FROM subscribers WHERE component = ?", (self.component,)
            ).fetchall()
        except sqlite3.Error as e:
            self.log.error(
                "Cannot read the subscriber database {path}: {error}", path=self.path, error=e
            )
            return
        self._jids = {jid for (jid,) in rows}

    def add(self, jid: str) -> bool:
        """
        Add the bare JID C{jid}.

        @return: whether it was not a subscriber already.
        """
        if jid in self._jids:
            return False
        self._jids.add(jid)
        self._write("INSERT OR IGNORE INTO subscribers VALUES (?, ?)", jid)
        return True

    def remove(self, jid: str) -> bool:
        """
        Remove the bare JID C{jid}.

        @return: whether it was a subscriber.
        """
        if jid not in self._jids:
            return False
        self._jids.discard(jid)
        self._write("DELETE FROM subscribers WHERE component = ? AND jid = ?", jid)
        return True

    def _write(self, statement: str, jid: str) -> None:
        """
        Write a change through; a failure is logged, and the change is kept
        in memory for the life of the process.
        """
        try:
            self._db.execute(statement, (self.component, jid))
        except sqlite3.Error as e:
            self.log.error(
                "Cannot write the subscriber database {path}: {error}; the change "
                "for {jid} is lost at the next restart",
                path=self.path,
                error=e,
                jid=jid,
            )

    def __contains__(self, jid: object) -> bool:
        return jid in self._jids

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._jids))

    def __len__(self) -> int:
        return len(self._jids)

    def all(self) -> list[str]:
        """
        Every subscriber, in order.
        """
        return sorted(self._jids)

    def close(self) -> None:
        self._db.close()


@implementer(IResourceObserver)
class ComponentPresenceHandler(PresenceProtocol):
    """
    The component's own presence, for the users subscribed to it.

    The component is available exactly while at least one resource of the
    target is online. It handles presence from anyone but the target (the
    target's presence is
    L{client_proxy.presence.TargetPresenceHandler}'s) addressed to the
    component's JID (a resource there is ignored, RFC 6121, 3.1.3), and
    follows the rules of RFC 6121 for a contact and its server:

      - C{subscribe}: approved at once (3.1.5), then the component's
        current presence is sent to the new subscriber (3.1.6).
      - C{unsubscribe}: the user cancels its subscription (3.3); the
        component forgets the subscriber, sends it unavailable presence
        (3.3.3) and confirms with C{unsubscribed}.
      - C{unsubscribed}, C{subscribed}: about the user's own presence,
        which the component never asks for; ignored.
      - C{probe} (4.3.2): a subscriber gets the current presence, available
        or unavailable; anyone else gets C{unsubscribed}, as 4.3.2 says a
        contact's server SHOULD answer a probe from a user without a
        subscription: the user's server then drops a subscription the
        component no longer knows (a state file lost, or none configured).
      - available and unavailable presence: ignored, neither forwarded to
        the implementing client nor answered with an error.
      - C{error}: ignored (RFC 6120, 8.3.1: an error is never answered).

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

    @ivar settleDelay: seconds to wait, on a new stream, for the target's
        resources before announcing the component unavailable.
    """

    log = Logger()
    settleDelay = 5.0

    def __init__(
        self,
        component: JID,
        target: JID,
        resources: Resources,
        subscribers: Subscribers,
        clock: IReactorTime,
    ) -> None:
        super().__init__()
        self.component = component
        self.target = target
        self.resources = resources
        self.subscribers = subscribers
        self.clock = clock
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
        super().connectionInitialized()
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
        (RFC 6121, 4.5.2), unless they know it already.
        """
        self._cancelSettle()
        if self.announced is not False:
            self._broadcast(False)

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
            self.sendPresence(JID(subscriber), available)

    def sendPresence(self, recipient: JID, available: bool | None = None) -> None:
        """
        Send the component's presence to C{recipient}: the current one
        unless C{available} says which.
        """
        if available is None:
            available = self.isAvailable()
        if available:
            self.available(recipient, sender=self.component)
        else:
            self.unavailable(recipient, sender=self.component)

    # Presence received

    def _onPresence(self, element) -> None:
        """
        Handle presence from users to the component's JID; leave the
        target's presence to L{TargetPresenceHandler}, and ignore presence
        to the other addresses of the component's domain.
        """
        if bare(element.getAttribute("from", "")) == self.target.userhost():
            return
        if bare(element.getAttribute("to", "")) != self.component.userhost():
            return
        super()._onPresence(element)

    def subscribeReceived(self, presence) -> None:
        """
        RFC 6121, 3.1.5: approve the subscription, then (3.1.6) send the
        current presence to the new subscriber.
        """
        user = JID(presence.sender.userhost())
        if self.subscribers.add(user.full()):
            self.log.info("{user} subscribed to the component", user=user.full())
        self.subscribed(user, sender=self.component)
        self.sendPresence(user)

    def unsubscribeReceived(self, presence) -> None:
        """
        RFC 6121, 3.3.3: the user cancels its subscription; it gets
        unavailable presence, and the cancellation is confirmed.
        """
        user = JID(presence.sender.userhost())
        if self.subscribers.remove(user.full()):
            self.log.info("{user} unsubscribed from the component", user=user.full())
        self.unavailable(user, sender=self.component)
        self.unsubscribed(user, sender=self.component)

    def unsubscribedReceived(self, presence) -> None:
        """
        RFC 6121, 3.2: the user cancels or refuses a subscription to its
        own presence; the component has none and asks for none.
        """

    def subscribedReceived(self, presence) -> None:
        """
        RFC 6121, 3.1.6: the user approves a subscription to its own
        presence; the component never asks for one.
        """

    def probeReceived(self, presence) -> None:
        """
        RFC 6121, 4.3.2: a subscriber gets the current presence, available
        or unavailable; anyone else gets C{unsubscribed}.
        """
        user = presence.sender.userhost()
        if user in self.subscribers:
            self.sendPresence(presence.sender)
        else:
            self.log.debug("Probe from {user}, not a subscriber", user=user)
            self.unsubscribed(JID(user), sender=self.component)

    def availableReceived(self, presence) -> None:
        """
        Directed presence from a user: ignored, never forwarded.
        """
        self.log.debug("Ignoring presence from {user}", user=presence.sender.full())

    def unavailableReceived(self, presence) -> None:
        """
        Directed unavailable presence from a user: ignored, never forwarded.
        """
        self.log.debug("Ignoring presence from {user}", user=presence.sender.full())

    def errorReceived(self, presence) -> None:
        """
        RFC 6120, 8.3.1: an error is never answered; ignored.
        """


class UnavailableOnStop(Service):
    """
    Tells the subscribers the component is unavailable when the proxy stops.

    To be started after L{GracefulStop}, and so stopped before it
    (L{MultiService} stops its children in reverse order): the presence is
    written before the stream's closing tag.
    """

    def __init__(self, handler: ComponentPresenceHandler) -> None:
        self.handler = handler

    def stopService(self) -> None:
        super().stopService()
        self.handler.stopping()
