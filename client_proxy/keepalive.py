"""
Noticing a dead server connection: XEP-0199 pings with a deadline.
"""

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.words.protocols.jabber.jid import JID
from wokkel.generic import Request
from wokkel.subprotocols import XMPPHandler

NS_PING = "urn:xmpp:ping"


class Ping(Request):
    """
    An XEP-0199 ping.
    """

    def toElement(self):
        element = Request.toElement(self)
        element.addElement((NS_PING, "ping"))
        return element


class KeepAlive(XMPPHandler):
    """
    Pings the server every C{interval} seconds, and drops the connection
    when a ping is still unanswered at the next one.

    A TCP connection to a server that has hung, or whose machine has gone,
    can look open for a long time; the proxy would go on accepting nothing
    and answering nothing. XEP-0199 (section 4.2): an entity may ping its
    server; any answer, even an error from a server without ping support
    (RFC 6120, 8.4), shows that the stream is alive. Dropping the connection
    lets L{twisted.application.internet.ClientService} connect again.

    @ivar server: where the pings go: the domain of the target's account,
        which the server the component is connected to serves.
    """

    log = Logger()

    def __init__(
        self, component: JID, server: JID, interval: float, clock: IReactorTime
    ) -> None:
        super().__init__()
        self.component = component
        self.server = server
        self.interval = interval
        self.clock = clock
        self._loop: LoopingCall | None = None
        self._unanswered = False

    def connectionInitialized(self) -> None:
        self._unanswered = False
        self._loop = LoopingCall(self.ping)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False)

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def ping(self) -> None:
        if self._unanswered:
            self.serverUnresponsive()
            return
        self._unanswered = True
        answer = self.request(Ping(recipient=self.server, sender=self.component))
        answer.addBoth(self.pongReceived)

    def pongReceived(self, result) -> None:
        """
        Any answer will do, an error too; a lost connection is told
        elsewhere.
        """
        self._unanswered = False

    def serverUnresponsive(self) -> None:
        self.log.warn(
            "The server did not answer a ping within {interval} s; "
            "dropping the connection to connect again",
            interval=self.interval,
        )
        self.xmlstream.transport.abortConnection()
