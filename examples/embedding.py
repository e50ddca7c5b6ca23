"""
client-proxy inside an existing Twisted application: a small web site (a
status page at /, Prometheus metrics at /metrics) and the proxy, under one
MultiService, in one process and one reactor.

Settings come from the environment:

    CLIENT_PROXY_JID          the component's JID, e.g. proxy.example.org
    CLIENT_PROXY_TARGET       the implementing client, e.g. service@example.org
    CLIENT_PROXY_SECRET_FILE  a file holding the component secret
    CLIENT_PROXY_ENDPOINT     the server's component port
                              [default: tcp:host=127.0.0.1:port=5347]
    EXAMPLE_WEB_PORT          the web site's port, on 127.0.0.1 [default: 8080]

(and the other CLIENT_PROXY_* variables of README.rst). Run it either way:

    twistd -ny examples/embedding.py     # as a .tac file: twistd's logging,
                                         # daemonizing, pid file, ...
    python examples/embedding.py         # your own main: logs to stdout
"""

import os
import sys
from html import escape

from prometheus_client import CollectorRegistry
from twisted.application import strports
from twisted.application.service import Application, MultiService
from twisted.web.resource import Resource
from twisted.web.server import Site

from client_proxy.config import ConfigError, fromEnvironment
from client_proxy.prometheus import MetricsResource
from client_proxy.service import makeService


class StatusPage(Resource):
    """
    The application's own page: the proxy's JID and state, read from the
    metrics registry the proxy reports to.
    """

    isLeaf = True

    def __init__(self, jid: str, registry: CollectorRegistry) -> None:
        super().__init__()
        self.jid = jid
        self.registry = registry

    def _sample(self, name: str) -> int:
        return int(self.registry.get_sample_value(name, {"jid": self.jid}) or 0)

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        connected = "yes" if self._sample("client_proxy_connected") else "no"
        online = self._sample("client_proxy_resources_online")
        return (
            "<!DOCTYPE html><title>client-proxy</title>"
            "<h1>%s</h1><p>connected: %s</p><p>resources online: %d</p>"
            % (escape(self.jid), connected, online)
        ).encode("utf-8")


def makeApplicationService(environ=os.environ) -> MultiService:
    """
    The whole application: the proxy and the web site, as one service.

    @raise ConfigError: a CLIENT_PROXY_* setting is missing or malformed.
    """
    top = MultiService()

    # The proxy: one call. The registry is optional; given, the proxy
    # reports to it, and the site below can read and serve it.
    config = fromEnvironment(environ)
    registry = CollectorRegistry()
    makeService(config, registry=registry).setServiceParent(top)

    # The rest of the application, here a web site.
    root = Resource()
    root.putChild(b"", StatusPage(config.jid, registry))
    root.putChild(b"metrics", MetricsResource(registry))
    port = environ.get("EXAMPLE_WEB_PORT") or "8080"
    strports.service("tcp:%s:interface=127.0.0.1" % (port,), Site(root)).setServiceParent(top)
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
