"""
Assembling a proxy: handlers on a stream manager, connected by a
L{ClientService}.

L{makeService} is the one call that code already running a Twisted
application needs::

    from client_proxy.config import build
    from client_proxy.service import makeService

    config = build(jid="proxy.example.org", target="service@example.org",
                   secretFile="/etc/client-proxy/secret")
    makeService(config).setServiceParent(application)
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from twisted.application import strports
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService, Service
from twisted.internet import endpoints
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, globalLogPublisher
from twisted.words.protocols.jabber import component, xmlstream
from twisted.words.protocols.jabber.jid import JID
from twisted.web.server import Site
from wokkel.subprotocols import StreamManager, XMPPHandler

from client_proxy import jat
from client_proxy.access import AccessPolicy
from client_proxy.config import ConfigError, ProxyConfig
from client_proxy.contacts import ComponentPresenceHandler, SubscriberLimits, UnavailableOnStop
from client_proxy.fastpath import FastXmlStream
from client_proxy.features import fleetDispatch
from client_proxy.inflight import RequestTable
from client_proxy.keepalive import KeepAlive
from client_proxy.messages import MessageRouter
from client_proxy.metrics import NoMetrics
from client_proxy.presence import Resources, TargetPresenceHandler
from client_proxy.router import IQRouter
from client_proxy.routing import Routing
from client_proxy.store import openStore

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


class ConnectionMonitor:
    """
    Logs the life of the component connection and sets the pace of
    reconnection.

    L{ClientService} backs off only while connection attempts fail; a
    connection the server accepts and then closes, as it does after a wrong
    secret (XEP-0114: a C{not-authorized} stream error), would be retried at
    once for ever. So the delay grows with the number of connections in a
    row that did not authenticate, too.

    A server that allows one connection per component host (Prosody) ends
    the stream of a second one with C{conflict}: that instance is then on
    standby, ready to take over when the active one goes. It tries again at
    a short fixed interval, not the growing backoff meant for a dead
    server, and says so once rather than at every try.

    Standby lasts as long as each connection ends in C{conflict}: any other
    end (a refused secret, a stream error, a server that does not answer)
    brings back the growing backoff and the log lines.

    @ivar standby: whether the last connection ended in C{conflict}.
    """

    log = Logger()

    def __init__(self, jid: str, endpoint: str, standbyInterval: float = 2.0) -> None:
        self.jid = jid
        self.endpoint = endpoint
        self.standbyInterval = standbyInterval
        self.standby = False
        self.unauthenticatedInARow = 0
        self._authenticated = False
        self._conflict = False  # whether this connection ended in conflict
        self._backoff = backoffPolicy(initialDelay=1.0, maxDelay=60.0)

    def observe(self, factory: xmlstream.XmlStreamFactory) -> None:
        factory.addBootstrap(xmlstream.STREAM_CONNECTED_EVENT, self.connected)
        factory.addBootstrap(xmlstream.STREAM_AUTHD_EVENT, self.authenticated)
        factory.addBootstrap(xmlstream.STREAM_ERROR_EVENT, self.streamErrorReceived)
        factory.addBootstrap(xmlstream.STREAM_END_EVENT, self.disconnected)

    def isAuthenticated(self) -> bool:
        """
        Whether the component connection is up and authenticated (for the
        C{client_proxy_connected} gauge).
        """
        return self._authenticated

    def retryDelay(self, failedAttempts: int) -> float:
        """
        The retry policy for L{ClientService}.
        """
        # The first retry after a connection is attempt 1 (ClientService
        # counts the attempts that failed since the last connection): a
        # later one means the server could not be reached at all.
        if self.standby and failedAttempts <= 1:
            return self.standbyInterval
        self.standby = False
        return self._backoff(max(failedAttempts, self.unauthenticatedInARow))

    def quietOnStandby(self, event: dict) -> None:
        """
        A log observer for L{ClientService}'s own messages ("Scheduling
        retry ...") that keeps them out of the log while on standby.
        """
        if not self.standby:
            globalLogPublisher(event)

    def connected(self, xs) -> None:
        self._authenticated = False
        self._conflict = False
        if self.standby:
            return
        self.log.info(
            "Connected to {endpoint}; authenticating as {jid}",
            endpoint=self.endpoint,
            jid=self.jid,
        )

    def authenticated(self, xs) -> None:
        self._authenticated = True
        self.unauthenticatedInARow = 0
        if self.standby:
            self.standby = False
            self.log.info("Taking over: {jid} is served here now", jid=self.jid)
        self.log.info("Authenticated as {jid}", jid=self.jid)

    def streamErrorReceived(self, reason) -> None:
        """
        RFC 6120, 4.9: the server ends the stream with an error.
        """
        condition = getattr(reason.value, "condition", None)
        if condition == "not-authorized":
            self.log.error(
                "Authentication failed: the server refused the secret for {jid}",
                jid=self.jid,
            )
        elif condition == "conflict":
            self._conflict = True
            if not self.standby:
                self.standby = True
                self.log.info(
                    "On standby: another connection serves {jid}; trying to "
                    "take over every {interval} s",
                    jid=self.jid,
                    interval=self.standbyInterval,
                )
        else:
            self.log.error(
                "The server ended the stream: {error}", error=reason.getErrorMessage()
            )

    def disconnected(self, reason) -> None:
        if not self._authenticated:
            self.unauthenticatedInARow += 1
        self._authenticated = False
        if not self._conflict:
            self.standby = False
        if self.standby:
            return
        self.log.info(
            "Disconnected from {endpoint}: {reason}",
            endpoint=self.endpoint,
            reason=reason.getErrorMessage(),
        )


class ProxyConnection(ClientService):
    """
    The component connection, whose own log lines the monitor may hush.
    """

    def __init__(self, monitor: ConnectionMonitor, *args, **kwargs) -> None:
        self._log = Logger(observer=monitor.quietOnStandby)
        super().__init__(*args, **kwargs)


class GracefulStop(Service):
    """
    Answers every request in flight before the connection closes.

    It is started after the connection and so stopped before it
    (L{MultiService} stops its children in reverse order): the errors and the
    stream's closing tag are written before the transport is closed.
    """

    def __init__(self, router: IQRouter, manager: StreamManager) -> None:
        self.router = router
        self.manager = manager

    def stopService(self) -> None:
        super().stopService()
        answered = self.router.answerAllWithError(
            "recipient-unavailable", "wait", "the proxy is shutting down"
        )
        if answered:
            Logger().info(
                "Stopping: answered {count} requests in flight with an error",
                count=answered,
            )
        self.router.tally.flush()
        if self.manager.xmlstream is not None:
            self.manager.xmlstream.sendFooter()


def makeService(
    config: ProxyConfig,
    reactor: IReactorTime | None = None,
    registry: "CollectorRegistry | None" = None,
) -> MultiService:
    """
    Build the service of one proxy, ready to be started or attached to an
    application.

    @param registry: where the proxy's metrics go, labelled by its JID
        (see L{makeMetricsService}); C{None} for none.
    """
    if reactor is None:
        from twisted.internet import reactor

    resources = Resources()
    manager, monitor, connection = _componentConnection(
        config, config.jid, config.endpoint, reactor
    )
    table = RequestTable(
        config.timeout,
        config.maxInFlightPerRequester,
        config.maxInFlight,
        maxPerDomain=config.maxInFlightPerDomain,
        maxRetainedBytes=config.maxRetainedBytes,
    )
    strategy, features = fleetDispatch(
        resources, table, config.strategy, config.drainShow, config.routeByFeatures
    )
    routing = Routing(
        config.jid,
        config.target,
        resources,
        strategy,
        config.instanceJid or "",
        maxStanzaSize=config.maxStanzaSize,
        access=AccessPolicy(config.target, config.allow, config.deny),
        clock=reactor,
        features=features,
    )
    router = IQRouter(
        routing,
        table,
        reactor,
        metrics=NoMetrics()
        if registry is None
        else _prometheus().PrometheusMetrics(
            config.jid,
            registry,
            inFlight=table.__len__,
            online=resources.__len__,
            connected=monitor.isAuthenticated,
        ),
    )
    router.setHandlerParent(manager)
    messages = MessageRouter(routing)
    messages.setHandlerParent(manager)
    contacts = ComponentPresenceHandler(
        JID(config.jid),
        JID(config.target),
        resources,
        openStore(config.stateFile, config.jid, reactor),
        reactor,
        access=routing.access,
        limits=SubscriberLimits(
            reactor, config.maxSubscribers, config.maxSubscribersPerDomain
        ),
        tally=routing.tally,
    )
    contacts.setHandlerParent(manager)

    proxy = MultiService()
    proxy.setName(config.jid)
    connection.setServiceParent(proxy)
    targetPresence = TargetPresenceHandler(
        JID(config.instanceJid or config.jid), JID(config.target), resources, reactor
    )
    if config.instanceJid is None:
        targetPresence.setHandlerParent(manager)
    else:
        instanceManager, _, instanceConnection = _componentConnection(
            config,
            config.instanceJid,
            config.instanceEndpoint or config.endpoint,
            reactor,
        )
        # First the resources, forgotten when the connection goes; then the
        # link, which tells the routers and the subscribers.
        targetPresence.setHandlerParent(instanceManager)
        InstanceLink(router, messages, contacts).setHandlerParent(instanceManager)
        instanceConnection.setServiceParent(proxy)
    GracefulStop(router, manager).setServiceParent(proxy)
    UnavailableOnStop(contacts).setServiceParent(proxy)
    return proxy


def _componentConnection(
    config: ProxyConfig, jid: str, endpoint: str, reactor: IReactorTime
) -> tuple[StreamManager, ConnectionMonitor, ClientService]:
    """
    A component connection for C{jid}: its stream manager, with a
    keepalive, its monitor, and the service that connects it.
    """
    factory = component.componentFactory(jid, config.secret)
    factory.protocol = FastXmlStream
    factory.noisy = False  # the monitor logs each connection, more clearly
    monitor = ConnectionMonitor(jid, endpoint, config.standbyInterval)
    monitor.observe(factory)
    manager = StreamManager(factory, reactor=reactor)
    KeepAlive(
        JID(jid), JID(jat.domain(config.target)), config.keepalive, reactor
    ).setHandlerParent(manager)
    connection = ProxyConnection(
        monitor,
        endpoints.clientFromString(reactor, endpoint),
        factory,
        retryPolicy=monitor.retryDelay,
        clock=reactor,
    )
    return manager, monitor, connection


class InstanceLink(XMPPHandler):
    """
    Joins the instance's own connection to the routers.

    In a pool of instances that share one component JID on a server that
    spreads the stanzas for it over their connections (ejabberd), an answer
    could reach another instance than the one its request left from. So
    each instance also owns a JID of its own: it subscribes to the target's
    presence from it and writes it in the addresses it translates, so that
    presence and answers come back to it, on this connection.
    """

    def __init__(
        self, router: IQRouter, messages: MessageRouter, contacts: ComponentPresenceHandler
    ) -> None:
        super().__init__()
        self.router = router
        self.messages = messages
        self.contacts = contacts

    def connectionInitialized(self) -> None:
        self.router.instanceStreamInitialized(self.xmlstream)
        self.xmlstream.addObserver("/message", self.messages.onMessage)

    def connectionLost(self, reason) -> None:
        """
        The requests in flight are answered, and the subscribers told that
        the component is unavailable: the target's resources are out of
        reach until this connection is back.
        """
        super().connectionLost(reason)
        self.router.instanceStreamLost()
        self.contacts.announce()


def makeProxiesService(
    configs: list[ProxyConfig],
    reactor: IReactorTime | None = None,
    metrics: str | None = None,
) -> MultiService:
    """
    Build one service holding a proxy (L{makeService}) per configuration,
    each with its own component connection, named by its JID.

    @param metrics: a Twisted server endpoint string where the metrics of
        every proxy and of the process are served (L{makeMetricsService}),
        as a child named C{metrics}; C{None} for no metrics.
    @raise ConfigError: metrics are asked for, and C{prometheus_client} is
        missing.
    """
    proxies = MultiService()
    registry = None if metrics is None else _prometheus().processRegistry()
    for config in configs:
        makeService(config, reactor, registry).setServiceParent(proxies)
    if metrics is not None:
        served = makeMetricsService(metrics, registry, reactor)
        served.setName("metrics")
        served.setServiceParent(proxies)
    return proxies


def makeMetricsService(
    endpoint: str, registry: "CollectorRegistry", reactor: IReactorTime | None = None
) -> Service:
    """
    Serve the metrics of C{registry} over HTTP on C{endpoint}, a Twisted
    server endpoint string such as C{tcp:9100:interface=127.0.0.1}: at
    C{/metrics} in the Prometheus text format, and the health of its
    proxies at C{/healthz} (L{client_proxy.prometheus.HealthResource});
    every other path is not found.

    @raise ConfigError: when the service starts, if it cannot listen.
    """
    site = Site(_prometheus().metricsRoot(registry))
    site.log = lambda request: None  # no access-log line at every scrape
    return MetricsServer(endpoint, site, reactor)


class MetricsServer(MultiService):
    """
    The HTTP server of the metrics, listening on C{endpoint} from the
    start (twistd's privileged start, before it drops privileges).

    A port it cannot listen on, in use or not allowed, is a configuration
    error naming the endpoint (L{ConfigError}), not a traceback.
    """

    def __init__(self, endpoint: str, site: Site, reactor: IReactorTime | None) -> None:
        super().__init__()
        self.endpoint = endpoint
        strports.service(endpoint, site, reactor=reactor).setServiceParent(self)

    def privilegedStartService(self) -> None:
        with self._listening():
            super().privilegedStartService()

    def startService(self) -> None:
        # Listens now if the privileged start did not happen (outside twistd).
        with self._listening():
            super().startService()

    @contextmanager
    def _listening(self) -> Iterator[None]:
        try:
            yield
        except CannotListenError as e:
            raise ConfigError(
                "metrics: cannot listen on %s: %s" % (self.endpoint, e.socketError)
            ) from None


def _prometheus():
    """
    The module L{client_proxy.prometheus}, which needs C{prometheus_client}.

    @raise ConfigError: C{prometheus_client} cannot be imported.
    """
    try:
        from client_proxy import prometheus
    except ImportError as e:
        raise ConfigError(
            "serving metrics needs the Python package prometheus_client (%s): "
            "pip install 'client-proxy[metrics]'" % (e,)
        )
    return prometheus
