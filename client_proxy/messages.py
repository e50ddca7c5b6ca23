"""
Messages through the component, translated as IQs are.
"""

from twisted.logger import Logger
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from client_proxy import jat
from client_proxy.fastpath import ROUTER_PRIORITY
from client_proxy.routing import RoutingHandler, StanzaTooLarge


class MessageRouter(RoutingHandler):
    """
    Routes messages between users and the target's resources.

    A message to the component (its bare JID or any full JID) from anyone
    but the target goes to one online resource of the target that is not
    draining, chosen by the strategy, from C{<component>/<sender's full
    JID>}. A message from a
    resource of the target to C{<component>/<JID>} goes to C{<JID>} from the
    component's bare JID. Types and payloads are untouched.

    A message that cannot be delivered (no resource online, or only
    draining ones; an address that cannot be translated) is answered with an error, except a message
    of type error, which is never answered (RFC 6120, 8.3.1), so that two
    entities cannot bounce errors at each other for ever. A message from
    the target to the component's bare JID is a C{bad-request}: nobody is
    behind that address. A message from someone the access policy refuses
    is answered C{forbidden}; one too large to send on (see
    L{client_proxy.routing.Streams.sendFrom}), C{policy-violation}.
    """

    log = Logger()

    def connectionInitialized(self) -> None:
        super().connectionInitialized()
        self.xmlstream.addObserver("/message", self.onMessage, ROUTER_PRIORITY)

    def onMessage(self, message: domish.Element) -> None:
        """
        A message arrived: unless a handler of the component's own took it
        (marked it C{handled}), it is routed, and marked so.
        """
        if getattr(message, "handled", False):
            return
        setattr(message, "handled", True)
        if jat.bare(message.getAttribute("from", "")) == self.target:
            self.messageFromTargetReceived(message)
        else:
            self.messageReceived(message)

    def messageReceived(self, message: domish.Element) -> None:
        """
        A user wrote to the component: on to a resource of the target.
        """
        sender = message.getAttribute("from", "")
        if not self.access.allows(sender):
            self.refuse(message, "forbidden", "auth", None)
            return
        resource = self.strategy.choose(sender)
        if resource is None:
            self.refuse(message, "service-unavailable", "cancel", "no resource is online")
            return
        try:
            translated = jat.encode(self.instance, sender)
        except jat.JATError as e:
            self.refuse(message, "jid-malformed", "modify", str(e))
            return
        to = message.getAttribute("to", self.component)
        message["from"] = translated
        message["to"] = resource
        self._send(message, translated, sender, to)

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
        sender = message["from"]
        message["from"] = self.component
        message["to"] = remote
        self._send(message, self.component, sender, to)

    def _send(self, message: domish.Element, sender: str, origin: str, to: str) -> None:
        """
        Send C{message}, translated, from C{sender}; if it is too large, its
        C{origin}, who wrote it C{to} the component, hears so instead.
        """
        try:
            self.streams.sendFrom(sender, message)
        except StanzaTooLarge:
            message["from"], message["to"] = origin, to
            self.refuse(
                message,
                "policy-violation",
                "modify",
                "the message is larger than the %d bytes the proxy may send"
                % (self.streams.maxStanzaSize,),
            )

    def refuse(
        self, message: domish.Element, condition: str, errorType: str, text: str | None
    ) -> None:
        """
        Answer an undeliverable message with an error, unless it is one
        (RFC 6120, 8.3.1), and count it. The error does not repeat the
        message's content (RFC 6120, 8.3.1 allows it, not requires it):
        it could be what made the message undeliverable.
        """
        sender = message.getAttribute("from", "")
        self.tally.count("refused", "messages", condition, sender)
        if message.getAttribute("type") == "error":
            return
        error = StanzaError(condition, errorType, text).toResponse(message)
        error.children = [child for child in error.children if child.name == "error"]
        try:
            self.streams.sendFrom(message.getAttribute("to", self.component), error)
        except StanzaTooLarge:
            self.tally.count("dropped", "errors", "too large", sender)
