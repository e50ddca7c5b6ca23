"""
What the routers share: the addresses, the target's resources, the
strategy, and the component's connections.
"""

from dataclasses import dataclass, field

from twisted.logger import Logger
from twisted.words.protocols.jabber.xmlstream import XMPPHandler

from client_proxy import jat
from client_proxy.dispatch import IStrategy
from client_proxy.presence import Resources


class Streams:
    """
    Where a stanza goes out: on the connection of the host it is from.

    XEP-0114: a connection is authenticated for one host, and a stanza
    must leave through the connection of the host in its C{from}. A proxy
    has one connection, or two when the instance owns a host of its own
    (see L{client_proxy.service}).
    """

    log = Logger()

    def __init__(self) -> None:
        self._byHost: dict = {}

    def connected(self, host: str, xs) -> None:
        self._byHost[host] = xs

    def disconnected(self, host: str) -> None:
        self._byHost.pop(host, None)

    def sendFrom(self, address: str, data) -> None:
        """
        Send C{data}, a stanza from C{address}, on its host's connection;
        with no such connection up, it cannot be sent and is dropped.
        """
        stream = self._byHost.get(jat.domain(address))
        if stream is None:
            self.log.debug("No connection for {address}; dropping a stanza", address=address)
            return
        stream.send(data)


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
    """

    component: str
    target: str
    resources: Resources
    strategy: IStrategy
    instance: str = ""
    streams: Streams = field(default_factory=Streams)

    def __post_init__(self) -> None:
        self.instance = self.instance or self.component


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
        self.streams = routing.streams

    def connectionInitialized(self) -> None:
        self.streams.connected(self.component, self.xmlstream)

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self.streams.disconnected(self.component)
