"""
client-proxy added to a Wokkel component someone already runs.

The component here is an ordinary one: a Wokkel C{StreamManager} over
Twisted's component connection (XEP-0114), kept up by a C{ClientService},
with a handler of its own that answers software version queries (XEP-0092)
sent to its JID. The proxy's handlers (L{client_proxy.service.ProxyHandlers})
are added to the same stream manager, and so share its connection, its
process and its reactor. They take what the component's own handlers
leave: every other IQ and every message sent to the component's JID goes to
a resource of the target, and the answers come back.

Settings come from the environment, as for proxy.tac:

    CLIENT_PROXY_JID          the component's JID, e.g. proxy.example.org
    CLIENT_PROXY_TARGET       the implementing client, e.g. service@example.org
    CLIENT_PROXY_SECRET_FILE  a file holding the component secret
    CLIENT_PROXY_ENDPOINT     the server's component port
                              [default: tcp:host=127.0.0.1:port=5347]

(and the other CLIENT_PROXY_* variables of docs/options.rst). Run it
either way:

    twistd -ny examples/embedding.py     # as a .tac file: twistd's logging,
                                         # daemonizing, pid file, ...
    python examples/embedding.py         # your own main: logs to stdout
"""

import os
import sys

from twisted.application.internet import ClientService
from twisted.application.service import Application, MultiService, Service
from twisted.internet import endpoints
from twisted.words.protocols.jabber import component
from twisted.words.protocols.jabber.xmlstream import toResponse
from wokkel.generic import FallbackHandler
from wokkel.subprotocols import StreamManager, XMPPHandler

from client_proxy import __version__
from client_proxy.config import ConfigError, fromEnvironment
from client_proxy.service import ProxyHandlers

NS_VERSION = "jabber:iq:version"


class VersionHandler(XMPPHandler):
    """
    The component's own handler: XEP-0092, the software version of the
    component, for a query sent to its JID.
    """

    def connectionInitialized(self) -> None:
        self.xmlstream.addObserver(
            "/iq[@type='get']/query[@xmlns='%s']" % (NS_VERSION,), self.onVersion
        )

    def onVersion(self, iq) -> None:
        iq.handled = True  # Twisted's and Wokkel's mark: taken
        response = toResponse(iq, "result")
        query = response.addElement((NS_VERSION, "query"))
        query.addElement("name", content="embedding example")
        query.addElement("version", content=__version__)
        self.send(response)


class StopTheProxyFirst(Service):
    """
    Started after the connection, so stopped before it (a C{MultiService}
    stops its children in reverse order): the proxy answers its requests
    in flight and the stream closes, before the connection does.
    """

    def __init__(self, handlers: ProxyHandlers, manager: StreamManager) -> None:
        self.handlers = handlers
        self.manager = manager

    def stopService(self) -> None:
        super().stopService()
        self.handlers.stop()
        if self.manager.xmlstream is not None:
            self.manager.xmlstream.sendFooter()


def makeApplicationService(environ=os.environ) -> MultiService:
    """
    The whole application: the component, with its own handler and the
    proxy's.

    @raise ConfigError: a CLIENT_PROXY_* setting is missing or malformed.
    """
    from twisted.internet import reactor

    config = fromEnvironment(environ)
    top = MultiService()

    # The component as it was before the proxy came.
    factory = component.componentFactory(config.jid, config.secret)
    manager = StreamManager(factory)
    VersionHandler().setHandlerParent(manager)
    # Answers feature-not-implemented to a request no handler took; with
    # the proxy's handlers added, none is left to it.
    FallbackHandler().setHandlerParent(manager)
    ClientService(
        endpoints.clientFromString(reactor, config.endpoint), factory
    ).setServiceParent(top)

    # The proxy: its handlers, on the same stream manager.
    handlers = ProxyHandlers(config, reactor)
    handlers.setHandlerParent(manager)
    StopTheProxyFirst(handlers, manager).setServiceParent(top)
    return top


def _build() -> MultiService:
    try:
        return makeApplicationService()
    except ConfigError as e:
        # A plain message and a non-zero exit rather than a traceback.
        raise SystemExit("embedding example: %s" % (e,))


def main() -> None:
    """
    Run without twistd: log to stdout, start the services, and stop them
    (answering the requests in flight) when the reactor stops, e.g. on
    SIGTERM or Ctrl-C.
    """
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    service = _build()  # before logging begins: an error goes to stderr
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
else:
    # twistd -y runs this file (with exec, not as __main__) and takes the
    # service tree from `application`.
    application = Application("client-proxy-embedding")
    _build().setServiceParent(application)
