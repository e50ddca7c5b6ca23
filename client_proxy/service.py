"""
Assembling the proxies: each one's handlers on stream managers, carried
by its component connections (L{ProxyService}); every proxy of a process,
the metrics, reloading on SIGHUP and telling systemd (L{ProcessService}).

L{makeService} is the one call that code already running a Twisted
application needs::

    from client_proxy.config import build
    from client_proxy.service import makeService

    config = build(jid="proxy.example.org", target="service@example.org",
                   secretFile="/etc/client-proxy/secret")
    makeService(config).setServiceParent(application)
"""

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any, cast

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, DeferredLock, gatherResults, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.words.protocols.jabber import component
from twisted.words.protocols.jabber.jid import JID
from twisted.web.server import Site
from wokkel.subprotocols import StreamManager, XMPPHandler

from client_proxy import jat, systemd
from client_proxy.access import AccessPolicy
from client_proxy.config import SETTINGS_BY_NAME, ConfigError, ProcessConfig, ProxyConfig
from client_proxy.connection import ComponentConnection, ConnectionState, describeEndpoint, tlsHost
from client_proxy.contacts import ComponentPresenceHandler, SubscriberLimits
from client_proxy.fastpath import FastXmlStream
from client_proxy.features import fleetDispatch
from client_proxy.inflight import RequestTable
from client_proxy.keepalive import KeepAlive, StandbyWatch
from client_proxy.messages import MessageRouter
from client_proxy.metrics import IMetrics
from client_proxy.presence import Resources, TargetPresenceHandler
from client_proxy.router import IQRouter
from client_proxy.routing import Routing
from client_proxy.store import StateFileError, openStore

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

#: The settings of a proxy that its running service cannot take in place:
#: a change restarts the proxy (see L{ProcessService.reload}).
RESTART_SETTINGS = frozenset(
    [
        "jid",
        "secret",
        "target",
        "endpoint",
        "instanceJid",
        "instanceEndpoint",
        "stateFile",
        # The eligible sets of the strategies are built with them.
        "drainShow",
        "routeByFeatures",
    ]
)


def changedSettings(old: ProxyConfig, new: ProxyConfig) -> list[str]:
    """
    The names of the settings whose values differ, in the order of
    L{ProxyConfig}'s fields.
    """
    return [f.name for f in fields(ProxyConfig) if getattr(old, f.name) != getattr(new, f.name)]


def settingKeys(names: list[str]) -> str:
    """
    Settings by their keys in a file (C{max_in_flight}), for the log.
    """
    return ", ".join(SETTINGS_BY_NAME[name].key for name in names)


class ProxyHandlers:
    """
    The handlers of one proxy, for any Wokkel L{StreamManager}: the IQ and
    message routers, the component as a contact, and the target's
    presence. This is what code that already runs a Wokkel component adds
    to it to proxy from the component's JID (C{config.jid}); the handlers
    of its own come first, and the proxy takes what they leave (see
    L{client_proxy.fastpath.routeIQs})::

        handlers = ProxyHandlers(config, reactor)
        handlers.setHandlerParent(manager)
        ...
        handlers.stop()   # before the stream closes

    L{ProxyService} carries them on connections of their own.

    @ivar config: the settings they run with.
    """

    def __init__(
        self, config: ProxyConfig, reactor: IReactorTime, metrics: IMetrics | None = None
    ) -> None:
        self.config = config
        self.resources = resources = Resources()
        self.table = table = RequestTable(
            config.timeout,
            config.maxInFlightPerRequester,
            config.maxInFlight,
            maxPerDomain=config.maxInFlightPerDomain,
            maxRetainedBytes=config.maxRetainedBytes,
        )
        #: How the resources are chosen; replaced when a reload changes it.
        self.dispatch = dispatch = fleetDispatch(
            resources, table, config.strategy, config.drainShow, config.routeByFeatures
        )
        self.routing = routing = Routing(
            config.jid,
            config.target,
            resources,
            dispatch.strategy,
            config.instanceJid or "",
            maxStanzaSize=config.maxStanzaSize,
            access=AccessPolicy(config.target, config.allow, config.deny),
            clock=reactor,
            features=dispatch.features,
        )
        self.router = IQRouter(routing, table, reactor, metrics=metrics)
        self.messages = MessageRouter(routing)
        self.contacts = ComponentPresenceHandler(
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
        self.targetPresence = TargetPresenceHandler(
            JID(config.instanceJid or config.jid), JID(config.target), resources, reactor
        )

    def setHandlerParent(self, manager: StreamManager) -> None:
        """
        Put every handler on C{manager}, the stream of the component's JID.
        """
        for handler in (self.router, self.messages, self.contacts, self.targetPresence):
            handler.setHandlerParent(manager)

    def stop(self) -> int:
        """
        Before the stream closes: every request in flight is answered with
        C{recipient-unavailable} (RFC 6120, 8.2.3: every request gets an
        answer), what was counted is logged, and the subscribers are told
        that the component is unavailable (RFC 6121, 4.5.2) and written.

        @return: how many requests were answered.
        """
        answered = self.router.answerAllWithError(
            "recipient-unavailable", "wait", "the proxy is shutting down"
        )
        self.router.tally.flush()
        self.contacts.stopping()
        return answered


class ProxyService(Service):
    """
    One proxy: its handlers (L{ProxyHandlers}), on the stream manager of
    its component connection (and of its instance's own connection, if it
    has an instance JID), started and stopped in a fixed order.

    It is named by its JID.

    @ivar config: the settings it runs with.
    @ivar connection: the component connection for the proxy's JID.
    @ivar instanceConnection: the connection for the instance JID, or
        C{None}.
    """

    log = Logger()

    def __init__(
        self,
        config: ProxyConfig,
        reactor: IReactorTime,
        registry: "CollectorRegistry | None" = None,
    ) -> None:
        self.config = config
        self.setName(config.jid)
        self.reactor = reactor
        self.keepalives: list[KeepAlive] = []
        manager, self.connection = self._componentConnection(config.jid, config.endpoint)
        self.handlers: ProxyHandlers  # read by the gauges, once it is made
        metrics = (
            None
            if registry is None
            else _prometheus().PrometheusMetrics(
                config.jid,
                registry,
                inFlight=lambda: len(self.handlers.table),
                online=lambda: len(self.handlers.resources),
                connected=self.connection.isAuthenticated,
            )
        )
        self.handlers = handlers = ProxyHandlers(config, reactor, metrics)
        self.resources, self.table, self.routing = (
            handlers.resources,
            handlers.table,
            handlers.routing,
        )
        self.router, self.messages, self.contacts = (
            handlers.router,
            handlers.messages,
            handlers.contacts,
        )
        self.managers = [manager]
        self.instanceConnection: ComponentConnection | None = None
        if config.instanceJid is None:
            handlers.setHandlerParent(manager)
        else:
            for handler in (self.router, self.messages, self.contacts):
                handler.setHandlerParent(manager)
            instanceManager, self.instanceConnection = self._componentConnection(
                config.instanceJid, config.instanceEndpoint or config.endpoint
            )
            self.managers.append(instanceManager)
            # First the resources, forgotten when the connection goes; then
            # the link, which tells the routers and the subscribers.
            handlers.targetPresence.setHandlerParent(instanceManager)
            InstanceLink(self.router, self.messages, self.contacts).setHandlerParent(
                instanceManager
            )
            # On standby (Prosody), the instance's connection watches the
            # one that serves the proxy's JID.
            watch = StandbyWatch(
                JID(config.instanceJid), JID(config.jid), config.standbyInterval, reactor
            )
            watch.setHandlerParent(instanceManager)
            self.connection.standbyWatch = watch

    def _componentConnection(
        self, jid: str, endpoint: str
    ) -> tuple[StreamManager, ComponentConnection]:
        """
        A component connection for C{jid}, and its stream manager, with a
        keepalive.
        """
        config = self.config
        factory = component.componentFactory(jid, config.secret)
        factory.protocol = FastXmlStream
        factory.noisy = False  # the connection logs each event, more clearly
        manager = StreamManager(factory, reactor=self.reactor)
        keepalive = KeepAlive(
            JID(jid), JID(jat.domain(config.target)), config.keepalive, self.reactor
        )
        keepalive.setHandlerParent(manager)
        self.keepalives.append(keepalive)
        connection = ComponentConnection(
            factory,
            endpoints.clientFromString(self.reactor, endpoint),
            self.reactor,
            jid,
            describeEndpoint(endpoint),
            proxy=config.jid,
            standbyInterval=config.standbyInterval,
            tlsHost=tlsHost(endpoint),
        )
        return manager, connection

    def connections(self) -> list[ComponentConnection]:
        """
        The proxy's component connections: the instance's own first.
        """
        return [c for c in (self.instanceConnection, self.connection) if c is not None]

    def isUp(self) -> bool:
        """
        Whether every connection is authenticated, or, for the proxy's JID,
        on standby while another instance serves it.
        """
        return all(
            c.state is ConnectionState.AUTHENTICATED
            or (c is self.connection and c.state is ConnectionState.STANDBY)
            for c in self.connections()
        )

    def startService(self) -> None:
        """
        Connect: the instance's own connection first, from which a standby
        watches the other instance.
        """
        super().startService()
        for connection in self.connections():
            connection.startService()

    def stopService(self) -> Deferred:
        """
        Stop gracefully, in this order:

          1. every request in flight is answered with C{recipient-unavailable}
             (RFC 6120, 8.2.3: every request gets an answer);
          2. the subscribers are told that the component is unavailable (RFC
             6121, 4.5.2), what was counted is logged, and the subscribers
             are written;
          3. each stream is closed by its closing tag (RFC 6120, 4.4), after
             the stanzas above;
          4. the connections close. The L{Deferred} fires once they have,
             and the state file is let go of.
        """
        super().stopService()
        answered = self.handlers.stop()
        if answered:
            self.log.info(
                "Stopping {proxy}: answered {count} requests in flight with an error",
                proxy=self.name,
                count=answered,
                event="stopping",
            )
        for manager in self.managers:
            if manager.xmlstream is not None:
                manager.xmlstream.sendFooter()
        closed = gatherResults([c.stopService() for c in self.connections()])
        closed.addCallback(lambda _: self.contacts.subscribers.close())
        return closed

    def reconfigure(self, config: ProxyConfig) -> list[str]:
        """
        Take the settings of C{config} in place, keeping the connections
        and the requests in flight: the limits apply to the requests that
        come from now on, the timeout to those in flight too (counted from
        when each came: a shorter one may expire some at once), and the
        strategy starts afresh.

        @return: the names of the settings that changed.
        @raise ValueError: a setting in L{RESTART_SETTINGS} changed.
        """
        changed = changedSettings(self.config, config)
        if RESTART_SETTINGS.intersection(changed):
            raise ValueError("cannot change in place: " + settingKeys(changed))
        if "timeout" in changed:
            self.router.setTimeout(config.timeout)
        table = self.table
        table.maxPerRequester = config.maxInFlightPerRequester
        table.maxPerDomain = config.maxInFlightPerDomain
        table.maxTotal = config.maxInFlight
        table.maxRetainedBytes = config.maxRetainedBytes
        self.routing.streams.maxStanzaSize = config.maxStanzaSize
        self.contacts.limits.maxSubscribers = config.maxSubscribers
        self.contacts.limits.maxPerDomain = config.maxSubscribersPerDomain
        if "keepalive" in changed:
            for keepalive in self.keepalives:
                keepalive.setInterval(config.keepalive)
        if "standbyInterval" in changed:
            for connection in self.connections():
                connection.standbyInterval = config.standbyInterval
            if self.connection.standbyWatch is not None:
                self.connection.standbyWatch.setInterval(config.standbyInterval)
        if "strategy" in changed:
            handlers = self.handlers
            replaced = handlers.dispatch
            handlers.dispatch = dispatch = fleetDispatch(
                self.resources,
                self.table,
                config.strategy,
                config.drainShow,
                config.routeByFeatures,
            )
            self._share("strategy", dispatch.strategy)
            self._share("features", dispatch.features)
            if dispatch.features is not None:
                dispatch.features.discovery.querier = self.router
            replaced.close()
        if "allow" in changed or "deny" in changed:
            access = AccessPolicy(config.target, config.allow, config.deny)
            self._share("access", access)
            self.contacts.access = access
        self.config = config
        return changed

    def _share(self, name: str, value: object) -> None:
        """
        Give the routing and the routers a new C{name} (each holds its
        own reference).
        """
        for holder in (self.routing, self.router, self.messages):
            setattr(holder, name, value)


def makeService(
    config: ProxyConfig,
    reactor: IReactorTime | None = None,
    registry: "CollectorRegistry | None" = None,
) -> ProxyService:
    """
    Build the service of one proxy, ready to be started or attached to an
    application.

    @param registry: where the proxy's metrics go, labelled by its JID
        (see L{makeMetricsService}); C{None} for none.
    @raise StateFileError: its state file is no database.
    """
    return ProxyService(config, _reactor(reactor), registry)


def _reactor(reactor: IReactorTime | None) -> Any:
    """
    C{reactor}, or the global reactor: imported only when needed, so that
    building a service does not install the default one.
    """
    if reactor is None:
        from twisted.internet import reactor as installed

        return installed
    return reactor


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


class ProcessService(MultiService):
    """
    Every proxy of a process, a L{ProxyService} each named by its JID, and
    the metrics (a child named C{metrics}) if they are served.

    On SIGHUP it reads its configuration again (L{reload}). Under systemd
    (C{Type=notify}) it says C{READY=1} once every proxy is up
    (L{ProxyService.isUp}), and keeps C{STATUS=} up to date.

    @ivar configuration: the configuration it runs with.
    @ivar load: reads the configuration again; C{None} for no reload.
    """

    log = Logger()

    def __init__(
        self,
        configuration: ProcessConfig,
        reactor: IReactorTime | None = None,
        load: Callable[[], ProcessConfig] | None = None,
        notify: Callable[[str], object] = systemd.notify,
    ) -> None:
        super().__init__()
        self.configuration = configuration
        self.reactor = _reactor(reactor)
        self.load = load
        self.notify = notify
        self.registry = (
            None if configuration.metrics is None else _prometheus().processRegistry()
        )
        self._ready = False
        self._previousHangUp: Any = None
        self._reloads = DeferredLock()
        for config in configuration.proxies:
            self._makeProxy(config).setServiceParent(self)
        if configuration.metrics is not None and self.registry is not None:
            served = makeMetricsService(configuration.metrics, self.registry, self.reactor)
            served.setName("metrics")
            served.setServiceParent(self)

    def _makeProxy(self, config: ProxyConfig) -> ProxyService:
        proxy = makeService(config, self.reactor, self.registry)
        for connection in proxy.connections():
            connection.stateObservers.append(self.connectionChanged)
        return proxy

    def proxies(self) -> list[ProxyService]:
        return [s for s in self if isinstance(s, ProxyService)]

    def startService(self) -> None:
        """
        Start every proxy, and reload on SIGHUP (twistd leaves that signal
        alone; its log rotation is SIGUSR1): the handler hands the reload
        to the reactor's thread.
        """
        super().startService()
        if self.load is not None:
            self._previousHangUp = signal.signal(signal.SIGHUP, self._hangUp)

    def stopService(self) -> Deferred:
        if self._previousHangUp is not None:
            signal.signal(signal.SIGHUP, self._previousHangUp)
            self._previousHangUp = None
        self.notify("STOPPING=1")
        return super().stopService()

    # Readiness

    def connectionChanged(self, connection: ComponentConnection) -> None:
        """
        A connection changed state: tell systemd, and that the process is
        ready once every proxy is up.
        """
        proxies = self.proxies()
        up = sum(p.isUp() for p in proxies)
        status = "STATUS=%d of %d proxies up" % (up, len(proxies))
        if up == len(proxies) and not self._ready and self.running:
            self._ready = True
            status = "READY=1\n" + status
        self.notify(status)

    # Reload

    def _hangUp(self, signum: int, frame: object) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> Deferred:
        """
        SIGHUP: read the configuration again (L{load}) and apply it.

        Proxies added start; proxies removed stop gracefully (their
        requests in flight answered, see L{ProxyService.stopService});
        a proxy whose connection settings changed (L{RESTART_SETTINGS})
        stops gracefully and starts again with them; the others take their
        new settings in place (L{ProxyService.reconfigure}), keeping their
        connections and their requests in flight. A configuration that
        does not check out, or a new state file that cannot be opened,
        changes nothing: it is logged as an error. The metrics endpoint
        and the log format take effect at the next start.

        Reloads run one at a time. The L{Deferred} fires once the proxies
        stopped have closed their connections.
        """
        return self._reloads.run(self._reload)

    def _reload(self) -> Deferred:
        if self.load is None:
            return succeed(None)
        self.log.info("Reloading the configuration", event="reload")
        try:
            configuration = self.load()
            current = {p.name: p for p in self.proxies()}
            wanted = {c.jid: c for c in configuration.proxies}
            restarts = {
                jid: changed
                for jid, config in wanted.items()
                if jid in current
                and RESTART_SETTINGS.intersection(
                    changed := changedSettings(current[jid].config, config)
                )
            }
            built = self._build([wanted[jid] for jid in wanted if jid not in current or jid in restarts])
        except (ConfigError, StateFileError) as e:
            self.log.error(
                "Reload failed; the running configuration stays: {error}",
                error=str(e),
                event="reload_failed",
                reason="bad configuration",
            )
            return succeed(None)
        stopped = []
        for jid, proxy in current.items():
            if jid not in wanted:
                self.log.info(
                    "Reload: stopping {proxy}, no longer configured; its requests in "
                    "flight are answered with an error",
                    proxy=jid,
                    event="proxy_removed",
                )
                stopped.append(
                    maybeDeferred(proxy.disownServiceParent).addCallback(self._removed, proxy)
                )
        inPlace = 0
        for jid, config in wanted.items():
            if jid not in current:
                self.log.info("Reload: starting {proxy}", proxy=jid, event="proxy_added")
                built[jid].setServiceParent(self)
            elif jid in restarts:
                self.log.info(
                    "Reload: restarting {proxy} to apply {settings}; its requests in flight "
                    "are answered with an error",
                    proxy=jid,
                    settings=settingKeys(restarts[jid]),
                    event="proxy_restarted",
                )
                stopped.append(
                    maybeDeferred(current[jid].disownServiceParent).addCallback(
                        self._restarted, built[jid]
                    )
                )
            else:
                changed = current[jid].reconfigure(config)
                if changed:
                    inPlace += 1
                    self.log.info(
                        "Reload: {proxy} takes {settings} in place",
                        proxy=jid,
                        settings=settingKeys(changed),
                        event="proxy_reconfigured",
                    )
        later = [
            SETTINGS_BY_NAME[name].key
            for name in ("metrics", "logFormat")
            if getattr(configuration, name) != getattr(self.configuration, name)
        ]
        if later:
            self.log.warn(
                "Reload: a change of {settings} takes effect at the next start",
                settings=", ".join(later),
                event="reload_partial",
            )
        self.configuration = replace(
            self.configuration, proxies=tuple(configuration.proxies)
        )
        self.log.info(
            "Reloaded: {added} added, {removed} removed, {restarted} restarted, "
            "{changed} changed in place",
            added=len(set(wanted) - set(current)),
            removed=len(set(current) - set(wanted)),
            restarted=len(restarts),
            changed=inPlace,
            event="reloaded",
        )
        return gatherResults(stopped)

    def _build(self, configs: list[ProxyConfig]) -> dict[str, ProxyService]:
        """
        The services of C{configs}, by JID; if one cannot be made, none.

        @raise StateFileError: a state file is no database.
        """
        built: dict[str, ProxyService] = {}
        try:
            for config in configs:
                built[config.jid] = self._makeProxy(config)
        except StateFileError:
            for proxy in built.values():
                proxy.contacts.subscribers.close()
            raise
        return built

    def _removed(self, ignored: object, proxy: ProxyService) -> None:
        """
        A proxy removed by a reload has closed its connections: its metrics
        go.
        """
        proxy.router.metrics.retire()

    def _restarted(self, ignored: object, proxy: ProxyService) -> None:
        """
        A proxy restarted by a reload has closed its connections: its new
        service starts, unless the process stops meanwhile.
        """
        if self.running:
            proxy.setServiceParent(self)


def makeProxiesService(
    configs: list[ProxyConfig],
    reactor: IReactorTime | None = None,
    metrics: str | None = None,
) -> ProcessService:
    """
    Build one service holding a proxy (L{makeService}) per configuration,
    each with its own component connection, named by its JID.

    @param metrics: a Twisted server endpoint string where the metrics of
        every proxy and of the process are served (L{makeMetricsService}),
        as a child named C{metrics}; C{None} for no metrics.
    @raise ConfigError: metrics are asked for, and C{prometheus_client} is
        missing.
    """
    return ProcessService(ProcessConfig(tuple(configs), metrics), reactor)


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
    return MetricsServer(endpoint, QuietSite(_prometheus().metricsRoot(registry)), reactor)


class QuietSite(Site):
    """
    A site that writes no access-log line: not one at every scrape.
    """

    def log(self, request) -> None:
        pass


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
        # The reactor given to a proxy provides every reactor interface;
        # the one it is typed as is the least the proxy's timers need.
        strports.service(endpoint, site, reactor=cast(Any, reactor)).setServiceParent(self)

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
