"""
XEP-0199 pings: noticing a dead server connection (L{KeepAlive}), and
noticing, on standby, that nobody serves the component's JID any more
(L{StandbyWatch}).
"""

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.error import StanzaError
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


class Pinger(XMPPHandler):
    """
    A handler that calls L{ping} every L{interval} seconds while its
    connection is initialized and L{pinging} says so.
    """

    def __init__(self, interval: float, clock: IReactorTime) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self.initialized = False
        self._loop: LoopingCall | None = None

    def pinging(self) -> bool:
        """
        Whether to ping while the connection is initialized.
        """
        return True

    def ping(self) -> None:
        raise NotImplementedError()

    def setInterval(self, interval: float) -> None:
        """
        Ping every C{interval} seconds from now on.
        """
        self.interval = interval
        if self._loop is not None:
            self._stopLoop()
            self._startLoop()

    def connectionInitialized(self) -> None:
        self.initialized = True
        self._startLoop()

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self.initialized = False
        self._stopLoop()

    def _startLoop(self) -> None:
        if self.initialized and self.pinging() and self._loop is None:
            self._loop = LoopingCall(self.ping)
            self._loop.clock = self.clock
            self._loop.start(self.interval, now=False)

    def _stopLoop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None


class KeepAlive(Pinger):
    """
    Pings the server every C{interval} seconds, and drops the connection
    when a ping is still unanswered at the next one.

    A TCP connection to a server that has hung, or whose machine has gone,
    can look open for a long time; the proxy would go on accepting nothing
    and answering nothing. XEP-0199 (section 4.2): an entity may ping its
    server; any answer, even an error from a server without ping support
    (RFC 6120, 8.4), shows that the stream is alive. Dropping the connection
    lets L{client_proxy.connection.ComponentConnection} connect again.

    @ivar server: where the pings go: the domain of the target's account,
        which the server the component is connected to serves.
    """

    log = Logger()

    def __init__(
        self, component: JID, server: JID, interval: float, clock: IReactorTime
    ) -> None:
        super().__init__(interval, clock)
        self.component = component
        self.server = server
        self._unanswered = False

    def connectionInitialized(self) -> None:
        self._unanswered = False
        super().connectionInitialized()

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
            event="ping_unanswered",
            proxy=self.component.full(),
            reason="ping unanswered",
        )
        self.xmlstream.transport.abortConnection()


def nobodyThere(error: StanzaError) -> bool:
    """
    Whether an error answer to a stanza for a component's JID is the
    server's, saying that no component is connected for that JID.

    Prosody answers C{remote-server-timeout} (type C{wait}), with
    C{<not-connected xmlns='xmpp:prosody.im/protocol/component'/>}. The
    proxy itself answers that condition only to a request its target did
    not answer in time (C{--timeout}), long after a L{StandbyWatch} ping
    has timed out.
    """
    return error.condition == "remote-server-timeout"


class StandbyWatch(Pinger):
    """
    Tells a connection on standby when nobody serves the component's
    shared JID any more, without connecting as that JID: XEP-0199 pings to
    it from the instance's own JID, on the instance's own connection.

    Prosody refuses a second connection for a component host
    (C{conflict}) and writes an error line in its log for each, so a
    standby that tried to connect every few seconds would fill that log.
    Pinging the shared JID instead costs one stanza each way: while another
    instance serves it, the ping reaches that instance, which forwards it to
    its target like any request, and an answer comes back (a result, or
    whatever error the instance or the target sends). When no component is
    connected for the shared JID, the server answers for it (L{nobodyThere}):
    then the standby connects, at once. A ping not answered within the
    interval is no news: the next one goes.

    @ivar instance: the instance's own JID, where the pings come from.
    @ivar shared: the component's JID, served by one instance at a time.
    """

    log = Logger()

    def __init__(
        self, instance: JID, shared: JID, interval: float, clock: IReactorTime
    ) -> None:
        super().__init__(interval, clock)
        self.instance = instance
        self.shared = shared
        self._takeOver: Callable[[], None] | None = None
        self._lost: Callable[[], None] | None = None

    def watch(self, takeOver: Callable[[], None], lost: Callable[[], None]) -> None:
        """
        Watch until L{stop}: call C{takeOver} once when the server says
        nobody serves the shared JID, and C{lost} whenever this watch's own
        connection goes (then nothing can be watched until it is back).
        """
        self._takeOver, self._lost = takeOver, lost
        self._startLoop()

    def stop(self) -> None:
        """
        Stop watching.
        """
        self._takeOver = self._lost = None
        self._stopLoop()

    def pinging(self) -> bool:
        return self._takeOver is not None

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        if self._lost is not None:
            self._lost()

    def ping(self) -> None:
        request = Ping(recipient=self.shared, sender=self.instance)
        request.timeout = self.interval
        self.request(request).addErrback(self.errorReceived)

    def errorReceived(self, reason: Failure) -> None:
        """
        An error answer, a ping timed out, or the connection lost: only the
        server's answer that nobody is there calls for action.
        """
        takeOver = self._takeOver
        if reason.check(StanzaError) and nobodyThere(reason.value) and takeOver is not None:
            self.stop()
            takeOver()
