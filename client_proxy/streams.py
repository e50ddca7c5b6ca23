"""
The component's connections, by the host each one serves.
"""

from twisted.logger import Logger

from client_proxy import jat


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
