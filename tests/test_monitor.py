"""
The component connection's state machine (connecting, authenticated,
standby, backing off) on a L{Clock} and L{StringTransport}s: the pace of
reconnection, standby only while each connection ends in conflict, and a
log event naming the proxy, the endpoint and the reason for each end.
"""

import pytest
from twisted.internet import error
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import component
from zope.interface import implementer

from client_proxy.connection import (
    ComponentConnection,
    ConnectionState,
    connectionEnd,
    describeEndpoint,
    tlsHost,
)

JID = "proxy.example.org"
WHERE = "127.0.0.1 port 5347"

HEADER = (
    b"<stream:stream xmlns='jabber:component:accept' "
    b"xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='proxy.example.org'>"
)
HANDSHAKE = b"<handshake/>"


def streamError(condition, text=None):
    body = b"<%s xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" % condition.encode()
    if text is not None:
        body += b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>%s</text>" % text.encode()
    return b"<stream:error>" + body + b"</stream:error>"


CONFLICT = streamError("conflict", "Component already connected")
WRONG_SECRET = streamError("not-authorized", "Given token does not match calculated token")


@implementer(IStreamClientEndpoint)
class Endpoint:
    """
    Connects each attempt to a L{StringTransport}, or fails it with the
    next exception of L{failures}, or leaves it pending if L{pending}.
    """

    def __init__(self):
        self.failures = []
        self.pending = False
        self.attempts = 0
        self.protocol = None
        self.transport = None
        self.waiting = None

    def connect(self, factory):
        self.attempts += 1
        if self.failures:
            return fail(self.failures.pop(0))
        if self.pending:
            self.waiting = Deferred()
            return self.waiting
        self.protocol = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        return succeed(self.protocol)

    def server(self, *data):
        """The server sends C{data}."""
        for chunk in data:
            self.protocol.dataReceived(chunk)

    def close(self, reason=error.ConnectionDone()):
        """The connection ends."""
        self.transport.loseConnection()
        self.protocol.connectionLost(Failure(reason))


class Watch:
    """A standby watch that records what it is asked."""

    instance = "node2.proxy.example.org"

    def __init__(self):
        self.watching = None
        self.stopped = 0

    def watch(self, takeOver, lost):
        self.watching = (takeOver, lost)

    def stop(self):
        self.watching = None
        self.stopped += 1


def policy(retry):
    """A backoff without jitter: 1.5, 2.25, 3.375... s."""
    return 1.5**retry


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def endpoint():
    return Endpoint()


@pytest.fixture
def connection(clock, endpoint):
    factory = component.componentFactory(JID, "secret")
    return ComponentConnection(
        factory, endpoint, clock, JID, WHERE, standbyInterval=2.0, retryPolicy=policy
    )


@pytest.fixture
def events():
    with capturedLogs() as captured:
        yield captured


def mine(events):
    """The events of the connection, as (level, event, reason, text)."""
    return [
        (e["log_level"], e["event"], e.get("reason"), e["text"])
        for e in events
        if e.get("proxy") == JID and "event" in e
    ]


def authenticate(endpoint):
    endpoint.server(HEADER, HANDSHAKE)


def retryAfter(clock, connection):
    """Let the pending retry (or standby try) happen."""
    [call] = clock.getDelayedCalls()
    clock.advance(call.getTime() - clock.seconds())


def test_authenticated(connection, endpoint, events):
    connection.startService()
    assert connection.state is ConnectionState.CONNECTING
    assert b"to='proxy.example.org'" in endpoint.transport.value()
    authenticate(endpoint)
    assert connection.state is ConnectionState.AUTHENTICATED
    assert connection.isAuthenticated()
    assert mine(events) == [
        (LogLevel.info, "authenticated", None, "Authenticated as %s at %s" % (JID, WHERE))
    ]


def test_a_refused_connection_backs_off_with_the_retry_counted(
    connection, endpoint, clock, events
):
    endpoint.failures = [error.ConnectionRefusedError()] * 3
    connection.startService()
    for retry in (1, 2):
        assert connection.state is ConnectionState.BACKING_OFF
        retryAfter(clock, connection)
    retryAfter(clock, connection)
    assert connection.state is ConnectionState.CONNECTING
    assert endpoint.attempts == 4
    assert mine(events) == [
        (
            LogLevel.warn,
            "connect_failed",
            "connection refused",
            "Cannot connect %s to %s: connection refused; retry %d in %s s"
            % (JID, WHERE, retry, delay),
        )
        for retry, delay in ((1, "1.5"), (2, "2.2"), (3, "3.4"))
    ]
    [event] = [e for e in events if e.get("retry") == 3]
    assert event["delay"] == 3.4, "rounded, as scheduled"
    authenticate(endpoint)
    assert mine(events)[-1][3] == "Authenticated as %s at %s after 3 failed attempts" % (
        JID,
        WHERE,
    )


def test_a_refused_secret_counts_though_the_connection_was_made(
    connection, endpoint, clock, events
):
    """
    The server accepts the TCP connection, then refuses the handshake:
    each refusal is one more failed attempt, and the backoff grows.
    """
    connection.startService()
    delays = []
    for _ in range(6):
        endpoint.server(HEADER, WRONG_SECRET)
        endpoint.close()
        [call] = clock.getDelayedCalls()
        delays.append(call.getTime() - clock.seconds())
        retryAfter(clock, connection)
    assert delays == sorted(delays) and delays[-1] > 10
    level, event, reason, text = mine(events)[0]
    assert (level, event, reason) == (LogLevel.error, "connect_failed", "secret refused")
    assert text == (
        "Authentication failed: the server refused the secret for %s (server at %s); "
        "retry 1 in 1.5 s"
        % (JID, WHERE)
    )
    assert [e["retry"] for e in events if e.get("event") == "connect_failed"] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    "data, reason",
    [
        (streamError("not-authorized"), "handshake refused"),  # ejabberd: secret or host
        (streamError("host-unknown"), "host unknown"),  # Prosody: an unknown host
        (streamError("policy-violation", "too big"), "stream error: policy-violation"),
    ],
)
def test_stream_errors_before_authentication(connection, endpoint, events, data, reason):
    connection.startService()
    endpoint.server(HEADER, data)
    endpoint.close()
    [(level, event, got, text)] = mine(events)
    assert (level, event, got) == (LogLevel.error, "connect_failed", reason)
    assert JID in text and WHERE in text


def test_the_server_closing_before_authentication(connection, endpoint, events):
    connection.startService()
    endpoint.server(HEADER)
    endpoint.close()
    [(level, event, reason, text)] = mine(events)
    assert (level, reason) == (LogLevel.warn, "closed before authentication")


def test_a_lost_connection_is_retried_as_retry_1(connection, endpoint, clock, events):
    connection.startService()
    authenticate(endpoint)
    endpoint.close(error.ConnectionLost())
    assert connection.state is ConnectionState.BACKING_OFF
    assert not connection.isAuthenticated()
    level, event, reason, text = mine(events)[-1]
    assert (level, event, reason) == (LogLevel.warn, "disconnected", "connection lost")
    assert text == "Disconnected from %s (%s): connection lost; retry 1 in 1.5 s" % (WHERE, JID)
    retryAfter(clock, connection)
    assert endpoint.attempts == 2


def test_conflict_is_standby_at_a_fixed_interval_said_once(connection, endpoint, clock, events):
    connection.startService()
    for _ in range(5):
        endpoint.server(HEADER, CONFLICT)
        endpoint.close()
        assert connection.state is ConnectionState.STANDBY and connection.standby
        [call] = clock.getDelayedCalls()
        assert call.getTime() - clock.seconds() == 2.0
        retryAfter(clock, connection)
    [(level, event, reason, text)] = mine(events)
    assert (level, event, reason) == (LogLevel.info, "standby", "conflict")
    assert text.startswith("On standby: another connection serves %s; trying to take over every 2 s" % JID)
    authenticate(endpoint)
    assert [e[1] for e in mine(events)] == ["standby", "takeover", "authenticated"]
    assert "Taking over: %s is served here now" % JID in mine(events)[1][3]


def test_a_refused_secret_after_a_conflict_backs_off(connection, endpoint, clock, events):
    connection.startService()
    endpoint.server(HEADER, CONFLICT)
    endpoint.close()
    retryAfter(clock, connection)
    delays = []
    for _ in range(6):
        endpoint.server(HEADER, WRONG_SECRET)
        endpoint.close()
        assert not connection.standby
        assert connection.state is ConnectionState.BACKING_OFF
        [call] = clock.getDelayedCalls()
        delays.append(call.getTime() - clock.seconds())
        retryAfter(clock, connection)
    assert delays == sorted(delays) and delays[-1] > 10
    assert [e[1] for e in mine(events)].count("connect_failed") == 6, "logged again"


def test_a_dead_server_after_a_conflict_backs_off(connection, endpoint, clock, events):
    connection.startService()
    endpoint.server(HEADER, CONFLICT)
    endpoint.close()
    endpoint.failures = [error.ConnectionRefusedError()] * 8
    retryAfter(clock, connection)
    for _ in range(7):
        retryAfter(clock, connection)
    assert not connection.standby
    [call] = clock.getDelayedCalls()
    assert call.getTime() - clock.seconds() > 10
    assert mine(events)[-1][1:3] == ("connect_failed", "connection refused")


def test_standby_with_a_watch_waits_for_it(connection, endpoint, clock, events):
    """
    With a watch, nothing is tried while the other connection is there:
    the watch says when to take over.
    """
    watch = connection.standbyWatch = Watch()
    connection.startService()
    endpoint.server(HEADER, CONFLICT)
    endpoint.close()
    assert connection.state is ConnectionState.STANDBY
    assert clock.getDelayedCalls() == [], "no try while the watch watches"
    assert "watching it from node2.proxy.example.org with a ping every 2 s" in mine(events)[0][3]
    takeOver, lost = watch.watching
    takeOver()
    assert connection.state is ConnectionState.CONNECTING and endpoint.attempts == 2
    assert watch.watching is None, "the watch stops"
    authenticate(endpoint)
    assert [e[1] for e in mine(events)] == ["standby", "takeover", "takeover", "authenticated"]


def test_standby_without_a_working_watch_tries_at_the_interval(connection, endpoint, clock):
    watch = connection.standbyWatch = Watch()
    connection.startService()
    endpoint.server(HEADER, CONFLICT)
    endpoint.close()
    takeOver, lost = watch.watching
    lost()
    [call] = clock.getDelayedCalls()
    assert call.getTime() - clock.seconds() == 2.0
    retryAfter(clock, connection)
    assert endpoint.attempts == 2 and watch.watching is None


def test_take_over_is_only_for_standby(connection, endpoint):
    connection.startService()
    authenticate(endpoint)
    connection.takeOver()
    assert endpoint.attempts == 1


def test_stop_while_backing_off(connection, endpoint, clock):
    endpoint.failures = [error.ConnectionRefusedError()]
    connection.startService()
    stopped = connection.stopService()
    assert stopped.called
    assert connection.state is ConnectionState.STOPPED
    assert clock.getDelayedCalls() == []


def test_stop_while_connecting(connection, endpoint, clock, events):
    endpoint.pending = True
    connection.startService()
    assert connection.stopService().called
    assert endpoint.waiting.called, "the attempt is cancelled"
    assert clock.getDelayedCalls() == [] and mine(events) == []


def test_stop_closes_the_connection_and_waits(connection, endpoint, clock, events):
    connection.startService()
    authenticate(endpoint)
    stopped = connection.stopService()
    assert endpoint.transport.disconnecting
    assert not stopped.called
    endpoint.close()
    assert stopped.called
    assert clock.getDelayedCalls() == [], "no reconnection"
    assert mine(events)[1:] == [
        (LogLevel.info, "stopped", None, "Disconnected from %s (%s): stopped" % (WHERE, JID))
    ]


def test_state_observers(connection, endpoint):
    seen = []
    connection.stateObservers.append(lambda c: seen.append(c.state))
    connection.startService()
    authenticate(endpoint)
    assert seen == [ConnectionState.CONNECTING, ConnectionState.AUTHENTICATED]


# Ends in words.


def test_endpoints_in_words():
    assert describeEndpoint("tcp:host=127.0.0.1:port=5347") == "127.0.0.1 port 5347"
    assert describeEndpoint("tcp:xmpp.example.org:5347") == "xmpp.example.org port 5347"
    assert describeEndpoint("tls:host=xmpp.example.org:port=5347:trustRoots=/etc/ca") == (
        "xmpp.example.org port 5347 (TLS)"
    )
    assert describeEndpoint("unix:path=/run/prosody/component.sock") == (
        "/run/prosody/component.sock"
    )
    assert tlsHost("tls:host=xmpp.example.org:port=5347") == "xmpp.example.org"
    assert tlsHost("tcp:host=xmpp.example.org:port=5347") is None


def test_tls_ends():
    from OpenSSL.SSL import Error as SSLError
    from service_identity import VerificationError

    untrusted = connectionEnd(
        Failure(SSLError([("SSL routines", "", "certificate verify failed")])), "xmpp.example.org"
    )
    assert untrusted.reason == "TLS certificate not trusted"
    assert "for xmpp.example.org is not trusted" in untrusted.detail
    assert untrusted.level is LogLevel.error
    mismatch = connectionEnd(Failure(VerificationError(errors=["DNS mismatch"])), "localhost")
    assert mismatch.reason == "TLS certificate name mismatch"
    assert "not valid for localhost" in mismatch.detail


@pytest.mark.parametrize(
    "exception, reason",
    [
        (error.ConnectionRefusedError(), "connection refused"),
        (error.DNSLookupError("xmpp.example.org"), "DNS failure"),
        (error.TCPTimedOutError(), "timed out"),
        (error.ConnectionAborted(), "connection aborted"),
        (error.ConnectionLost(), "connection lost"),
    ],
)
def test_connection_ends(exception, reason):
    assert connectionEnd(Failure(exception)).reason == reason
