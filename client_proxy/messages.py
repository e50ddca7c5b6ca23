"""
Messages to the component.
"""

from twisted.logger import Logger
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.xmlstream import XMPPHandler
from twisted.words.xish import domish

from client_proxy.jat import bare


class MessageRefuser(XMPPHandler):
    """
    Answers messages as mod_client_proxy does: they are not routed.

    A message from the target to the component's bare JID is a
    C{bad-request}; any other message gets C{feature-not-implemented}.
    Messages of type error are never answered (RFC 6120, 8.3.1), so that two
    entities cannot bounce errors at each other for ever.
    """

    log = Logger()

    def __init__(self, component: str, target: str) -> None:
        super().__init__()
        self.component = component
        self.target = target

    def connectionInitialized(self) -> None:
        self.xmlstream.addObserver("/message", self.onMessage)

    def onMessage(self, message: domish.Element) -> None:
        if message.getAttribute("type") == "error":
            return
        sender = message.getAttribute("from", "")
        if bare(sender) == self.target and message.getAttribute("to") == self.component:
            condition = "bad-request"
        else:
            condition = "feature-not-implemented"
        self.log.debug("Refusing a message from {sender}", sender=sender)
        self.xmlstream.send(StanzaError(condition, "cancel").toResponse(message))
