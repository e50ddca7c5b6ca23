"""
The life of a proxy and of a process of proxies, on a memory reactor and
string transports: the order of a graceful stop, readiness for systemd,
and reloading the configuration.
"""

import dataclasses

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure

from client_proxy.config import ConfigError, ProcessConfig, build
from client_proxy.connection import ConnectionState
from client_proxy.service import ProcessService, ProxyService, changedSettings

A, B, C = "a.example.org", "b.example.org", "c.example.org"
TARGET = "service@example.org"
RESOURCE = TARGET + "/r"
USER = "user@example.org/x"


def proxy(jid, **settings):
    settings.setdefault("endpoint", "tcp:host=127.0.0.1:port=5347")
    return build(jid=jid, target=TARGET, secret="s", environ={}, **settings)


class Server:
    """
    The server's side of the connections a memory reactor was asked for.
    """

    def __init__(self, reactor):
        self.reactor = reactor
        self.streams = {}  # index in tcpClients -> (protocol, transport)

    def accept(self, index=-1, jid=None):
        """Accept connection C{index} and authenticate it."""
        if index < 0:
            index += len(self.reactor.tcpClients)
        factory = self.reactor.tcpClients[index][2]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(
            b"<stream:stream xmlns='jabber:component:accept' "
            b"xmlns:stream='http://etherx.jabber.org/streams' id='s1'>"
        )
        protocol.dataReceived(b"<handshake/>")
        self.streams[index] = protocol, transport
        return protocol, transport

    def close(self, index):
        protocol, transport = self.streams[index]
        protocol.connectionLost(Failure(ConnectionDone()))


def request(protocol, id, to=A):
    protocol.dataReceived(
        b"<iq type='get' id='%s' from='%s' to='%s'><query xmlns='urn:test'/></iq>"
        % (id.encode(), USER.encode(), to.encode())
    )


@pytest.fixture
def reactor():
    return MemoryReactorClock()


@pytest.fixture
def server(reactor):
    return Server(reactor)


# One proxy.


def test_a_graceful_stop_answers_says_unavailable_then_closes(reactor, server):
    """
    The requests in flight are answered, then the subscribers told, then
    the stream closed by its closing tag, then the connection.
    """
    service = ProxyService(proxy(A), reactor)
    service.startService()
    protocol, transport = server.accept()
    assert service.connection.isAuthenticated()
    service.resources.available(RESOURCE)
    service.contacts.subscribers.add("alice@example.org")
    request(protocol, "q1")
    assert b"id='q1'" in transport.value(), "forwarded to the resource"
    before = len(transport.value())

    with capturedLogs() as events:
        stopped = service.stopService()
    written = transport.value()[before:]
    answer = written.index(b"recipient-unavailable")
    presence = written.index(b"<presence")
    footer = written.index(b"</stream:stream>")
    assert answer < presence < footer == len(written) - len(b"</stream:stream>")
    assert b"to='alice@example.org'" in written[presence:footer]
    assert transport.disconnecting
    assert not stopped.called, "until the connection is closed"
    protocol.connectionLost(Failure(ConnectionDone()))
    assert stopped.called
    assert service.connection.state is ConnectionState.STOPPED
    assert [e["count"] for e in events if e.get("event") == "stopping"] == [1]
    assert reactor.getDelayedCalls() == [], "no timer left: no reconnection, no ping"


def test_reconfigure_in_place(reactor, server):
    service = ProxyService(proxy(A), reactor)
    service.startService()
    protocol, transport = server.accept()
    service.resources.available(RESOURCE)
    request(protocol, "q1")
    replaced = service.handlers.dispatch
    changed = service.reconfigure(
        proxy(A, timeout=5, maxInFlight=7, strategy="sticky", deny=["evil.example"],
              keepalive=30, maxStanzaSize=8000, maxSubscribers=3)
    )
    assert set(changed) == {
        "timeout", "maxInFlight", "maxInFlightPerDomain", "strategy", "deny", "keepalive",
        "maxStanzaSize", "maxSubscribers",
    }
    assert service.table.timeout == 5 and service.table.maxTotal == 7
    assert service.table.maxPerDomain == 1, "a quarter of max_in_flight, at least 1"
    assert len(service.table) == 1, "the request in flight stays"
    assert not transport.disconnecting, "the connection stays"
    assert service.routing.streams.maxStanzaSize == 8000
    assert service.contacts.limits.maxSubscribers == 3
    assert all(k.interval == 30 for k in service.keepalives)
    assert service.router.strategy is service.routing.strategy
    assert type(service.router.strategy).__name__ == "StickyStrategy"
    service.resources.available(TARGET + "/later")
    assert TARGET + "/later" in service.handlers.dispatch.eligible
    assert TARGET + "/later" not in replaced.eligible, "the old strategy's set is let go"
    assert not service.router.access.allows("x@evil.example")
    assert not service.contacts.access.allows("x@evil.example")


def test_a_shorter_timeout_holds_for_the_requests_in_flight(reactor, server):
    """
    Counted from when each request came: one past the new timeout is
    answered at once, a new one on the new deadline.
    """
    service = ProxyService(proxy(A, timeout=30), reactor)
    service.startService()
    protocol, transport = server.accept()
    service.resources.available(RESOURCE)
    request(protocol, "old")
    reactor.advance(5)
    service.reconfigure(proxy(A, timeout=2))
    reactor.advance(0)
    assert b"remote-server-timeout" in transport.value()
    request(protocol, "new")
    before = len(transport.value())
    reactor.advance(1.9)
    assert b"remote-server-timeout" not in transport.value()[before:]
    reactor.advance(0.1)
    written = transport.value()[before:]
    assert b"id='new'" in written and b"remote-server-timeout" in written


def test_connection_settings_cannot_change_in_place(reactor):
    service = ProxyService(proxy(A), reactor)
    with pytest.raises(ValueError):
        service.reconfigure(proxy(A, endpoint="tcp:host=127.0.0.1:port=5348"))


def test_changed_settings():
    assert changedSettings(proxy(A), proxy(A)) == []
    other = dataclasses.replace(proxy(A, timeout=3), secret="t")
    assert changedSettings(proxy(A), other) == ["secret", "timeout"]


# A process of proxies.


class Loads:
    """What L{ProcessService.load} returns, or raises, next."""

    def __init__(self):
        self.next = None

    def __call__(self):
        if isinstance(self.next, Exception):
            raise self.next
        return self.next


@pytest.fixture
def loads():
    return Loads()


@pytest.fixture
def notified():
    return []


@pytest.fixture
def process(reactor, loads, notified):
    service = ProcessService(
        ProcessConfig((proxy(A), proxy(B))), reactor, load=loads, notify=notified.append
    )
    service.startService()
    yield service
    if service.running:
        service.stopService()


def test_ready_once_every_proxy_is_up(process, server, notified):
    server.accept(0)
    assert [n for n in notified if "READY" in n] == []
    server.accept(1)
    assert notified[-1] == "READY=1\nSTATUS=2 of 2 proxies up"
    server.close(0)
    assert notified[-1] == "STATUS=1 of 2 proxies up"
    assert sum("READY" in n for n in notified) == 1
    process.stopService()
    assert "STOPPING=1" in notified


def test_a_reload_adds_removes_and_changes_in_place(process, reactor, server, loads):
    a, aTransport = server.accept(0)
    b, bTransport = server.accept(1)
    first = process.getServiceNamed(A)
    first.resources.available(RESOURCE)
    request(a, "q1")
    loads.next = ProcessConfig((proxy(A, timeout=5), proxy(C)))
    done = []
    with capturedLogs() as events:
        process.reload().addCallback(done.append)
    assert process.getServiceNamed(A) is first, "kept"
    assert first.table.timeout == 5 and len(first.table) == 1
    assert not aTransport.disconnecting
    assert bTransport.disconnecting and bTransport.value().endswith(b"</stream:stream>")
    assert [s.name for s in process.proxies()] == [A, C]
    assert len(reactor.tcpClients) == 3, "C connects"
    assert done == []
    server.close(1)
    assert len(done) == 1
    kinds = [(e.get("event"), e.get("proxy")) for e in events if e.get("event")]
    assert ("proxy_removed", B) in kinds and ("proxy_added", C) in kinds
    assert ("proxy_reconfigured", A) in kinds and ("reloaded", None) in kinds
    [summary] = [e for e in events if e.get("event") == "reloaded"]
    assert (summary["added"], summary["removed"], summary["restarted"], summary["changed"]) == (
        1, 1, 0, 1)


def test_a_reload_restarts_a_proxy_whose_connection_changed(process, reactor, server, loads):
    a, aTransport = server.accept(0)
    server.accept(1)
    old = process.getServiceNamed(A)
    old.resources.available(RESOURCE)
    request(a, "q1")
    loads.next = ProcessConfig((proxy(A, endpoint="tcp:host=127.0.0.1:port=5348"), proxy(B)))
    process.reload()
    assert b"recipient-unavailable" in aTransport.value(), "its request answered"
    assert aTransport.disconnecting
    assert len(reactor.tcpClients) == 2, "the new one waits for the old one to close"
    server.close(0)
    assert len(reactor.tcpClients) == 3
    assert reactor.tcpClients[-1][1] == 5348
    new = process.getServiceNamed(A)
    assert new is not old and new.running


def test_a_broken_configuration_changes_nothing(process, server, loads):
    server.accept(0)
    server.accept(1)
    before = process.proxies()
    loads.next = ConfigError("proxy.toml: timeout: must be positive, not -1")
    with capturedLogs() as events:
        process.reload()
    assert process.proxies() == before
    [failed] = [e for e in events if e.get("event") == "reload_failed"]
    assert failed["log_level"] is LogLevel.error
    assert "must be positive" in failed["error"]


def test_a_state_file_that_cannot_be_opened_changes_nothing(process, server, loads, tmp_path):
    garbage = tmp_path / "garbage"
    garbage.write_text("not a database, " * 100)
    loads.next = ProcessConfig((proxy(A), proxy(B), proxy(C, stateFile=str(garbage))))
    with capturedLogs() as events:
        process.reload()
    assert [s.name for s in process.proxies()] == [A, B]
    assert [e.get("event") for e in events if e.get("event") == "reload_failed"]


def test_process_settings_change_at_the_next_start(process, loads):
    loads.next = dataclasses.replace(
        process.configuration, logFormat="json", metrics="tcp:9100:interface=127.0.0.1"
    )
    with capturedLogs() as events:
        process.reload()
    [warning] = [e for e in events if e.get("event") == "reload_partial"]
    assert warning["settings"] == "metrics, log_format"
    assert [c.name for c in process] == [A, B], "no metrics service"


def test_a_removed_proxy_leaves_the_metrics(reactor, server, loads):
    """
    Its series go once it has stopped: /healthz would otherwise count it,
    not connected, for ever.
    """
    from client_proxy.prometheus import HealthResource
    from twisted.web.test.requesthelper import DummyRequest

    process = ProcessService(
        ProcessConfig((proxy(A), proxy(B)), metrics="tcp:0:interface=127.0.0.1"),
        reactor,
        load=loads,
        notify=lambda state: None,
    )
    process.startService()
    try:
        a, aTransport = server.accept(0)
        server.accept(1)
        process.getServiceNamed(B).router.metrics.answerSent("error", "forbidden")
        loads.next = ProcessConfig((proxy(A),), metrics="tcp:0:interface=127.0.0.1")
        process.reload()
        server.close(1)

        def jids():
            return {
                sample.labels.get("jid")
                for family in process.registry.collect()
                for sample in family.samples
            } - {None}

        assert jids() == {A}
        request = DummyRequest([b""])
        HealthResource(process.registry).render_GET(request)
        assert request.responseCode == 200
    finally:
        process.stopService()
