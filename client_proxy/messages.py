"""
Messages through the component, translated as IQs are.
"""

from twisted.logger import Logger
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from client_proxy import jat
from client_proxy.routing import RoutingHandler


class MessageRouter(RoutingHandler):
    """
    Routes messages between users and the target's resources.

    A message to the component (its bare JID or any full JID) from anyone
    but the target goes to one online resource of the target, chosen by the
    strategy, from C{<component>/<sender's full JID>}. A message from a
    resource of the target to C{<component>/<JID>} goes to C{<JID>} from the
    component's bare JID. Types and payloads are untouched.

    A message that cannot be delivered (no resource online, an address
    that cannot be translated) is answered with an error, except a message
    of type error, which is never answered (RFC 6120, 8.3.1), so that two
    entities cannot bounce errors at each other for ever. A message from
    the target to the component's bare JID is a C{bad-request}: nobody is
    behind that address.
    """

    log = Logger()

    def connectionInitialized(self) -> None:
        super().connectionInitialized()
        self.xmlstream.addObserver("/message", self.onMessage)

    def onMessage(self, message: domish.Element) -> None:
        if jat.bare(message.getAttribute("from", "")) == self.target:
            self.messageFromTargetReceived(message)
        else:
            self.messageReceived(message)

    def messageReceived(self, message: domish.Element) -> None:
        """
        A user wrote to the component: on to a resource of the target.
        """
        sender = message.getAttribute("from", "")
        online = self.resources.online()
        if not online:
            self.refuse(message, "service-unavailable", "cancel", "no resource is online")
            return
        try:
            translated = jat.encode(self.instance, sender)
        except jat.JATError as e:
            self.refuse(message, "jid-malformed", "modify", str(e))
            return
        message["from"] = translated
        message["to"] = self.strategy.choose(online, sender)
        self.streams.sendFrom(translated, message)

    def messageFromTargetReceived(self, message: domish.Element) -> None:
        """
        A resource of the target wrote to C{<component>/<JID>}: on to
        C{<JID>}, from the component.
        """
        to = message.getAttribute("to", "")
        remote = jat.decode(self.component, to) or jat.decode(self.instance, to)
        if remote is None:
            self.refuse(message, "bad-request", "cancel", None)
            return
        if not jat.isValidJID(remote) or jat.domain(remote) in (
            self.component,
            self.instance,
        ):
            self.refuse(message, "jid-malformed", "modify", "not an address to send to")
            return
        message["from"] = self.component
        message["to"] = remote
        self.streams.sendFrom(self.component, message)

    def refuse(
        self, message: domish.Element, condition: str, errorType: str, text: str | None
    ) -> None:
        """
        Answer an undeliverable message with an error, unless it is one.
        """
        if message.getAttribute("type") == "error":
            self.log.debug(
                "Dropping an undeliverable error message from {sender}",
                sender=message.getAttribute("from"),
            )
            return
        self.streams.sendFrom(
            message.getAttribute("to", self.component),
            StanzaError(condition, errorType, text).toResponse(message),
        )
