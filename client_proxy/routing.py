"""
What the routers share: the addresses, the target's resources, the
strategy, and the component's connections.
"""

from dataclasses import dataclass, field

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.words.protocols.jabber.xmlstream import XMPPHandler
from twisted.words.xish import domish

from client_proxy import jat
from client_proxy.access import AccessPolicy
from client_proxy.dispatch import IStrategy
from client_proxy.fastpath import compact
from client_proxy.features import FeatureRouting
from client_proxy.presence import Resources
from client_proxy.quiet import Tally

#: The largest stanza sent by default: below the 512 KiB that Prosody
#: accepts on a component stream (component_stanza_size_limit, by default
#: its s2s limit), past which it ends the stream.
DEFAULT_MAX_STANZA_SIZE = 480 * 1024


class StanzaTooLarge(Exception):
    """
    A stanza is larger than the server accepts on the component stream,
    even written compactly; it was not sent.

    @ivar size: its size in bytes, written compactly when that was tried.
    """

    def __init__(self, size: int) -> None:
        super().__init__("a stanza of %d bytes" % (size,))
        self.size = size


class Streams:
    """
    Where a stanza goes out: on the connection of the host it is from.

    XEP-0114: a connection is authenticated for one host, and a stanza
    must leave through the connection of the host in its C{from}. A proxy
    has one connection, or two when the instance owns a host of its own
    (see L{client_proxy.service}).
    """

    log = Logger()

    def __init__(self, maxStanzaSize: int = DEFAULT_MAX_STANZA_SIZE) -> None:
        self.maxStanzaSize = maxStanzaSize
        self._byHost: dict = {}

    def connected(self, host: str, xs) -> None:
        self._byHost[host] = xs

    def disconnected(self, host: str) -> None:
        self._byHost.pop(host, None)

    def sendFrom(self, address: str, data: bytes | domish.Element) -> bool:
        """
        Send C{data}, a stanza from C{address}, on its host's connection.

        A server ends the stream of a component that sends a stanza over
        its limit, and every request in flight with it. So nothing larger
        than C{maxStanzaSize} is sent: a stanza past it is written again
        compactly (L{compact}), and if it is still too large it is not
        sent at all.

        @return: whether it was sent: C{False} when no connection for its
            host is up.
        @raise StanzaTooLarge: it is too large to send.
        """
        stanza = data if isinstance(data, bytes) else data.toXml().encode("utf-8")
        if len(stanza) > self.maxStanzaSize:
            smaller = compact(stanza)
            if smaller is None or len(smaller) > self.maxStanzaSize:
                raise StanzaTooLarge(len(stanza) if smaller is None else len(smaller))
            stanza = smaller
        stream = self._byHost.get(jat.domain(address))
        if stream is None:
            return False
        stream.send(stanza)
        return True


@dataclass
class Routing:
    """
    The setting of a proxy's routers.

    @ivar component: the component's bare JID, which requesters address.
    @ivar target: the target's bare JID.
    @ivar instance: the host in the addresses the component translates, and
        the C{from} of what it sends on for the target: the instance's own
        component JID in a pool (see L{client_proxy.service}), else
        C{component}.
    @ivar maxStanzaSize: the largest stanza the server accepts on the
        component stream, in bytes (see L{Streams.sendFrom}).
    @ivar access: who may use the proxy; by default, everyone (the
        target's policy, with no lists).
    @ivar clock: the clock of the L{Tally} of what remote senders cause;
        by default, the global reactor.
    @ivar features: the routing of requests by the features of the
        resources, or C{None} to choose among all with C{strategy}.
    """

    component: str
    target: str
    resources: Resources
    strategy: IStrategy
    instance: str = ""
    maxStanzaSize: int = DEFAULT_MAX_STANZA_SIZE
    access: AccessPolicy = field(default_factory=lambda: AccessPolicy(""))
    clock: IReactorTime | None = None
    features: FeatureRouting | None = None
    streams: Streams = field(init=False)
    tally: Tally = field(init=False)

    def __post_init__(self) -> None:
        self.instance = self.instance or self.component
        self.streams = Streams(self.maxStanzaSize)
        if not self.access.target:
            self.access = AccessPolicy(self.target)
        if self.clock is None:
            from twisted.internet import reactor as clock

            self.clock = clock
        self.tally = Tally(self.component, self.clock, Logger(namespace="client_proxy"))


class RoutingHandler(XMPPHandler):
    """
    A handler that routes between requesters and the target, on the
    component's connection, which it makes known to L{Streams}.
    """

    def __init__(self, routing: Routing) -> None:
        super().__init__()
        self.component = routing.component
        self.target = routing.target
        self.instance = routing.instance
        self.resources = routing.resources
        self.strategy = routing.strategy
        self.features = routing.features
        self.streams = routing.streams
        self.access = routing.access
        self.tally = routing.tally

    def connectionInitialized(self) -> None:
        self.streams.connected(self.component, self.xmlstream)

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self.streams.disconnected(self.component)
