"""
The component connection (XEP-0114) and its life: connecting,
authenticated, on standby, backing off; and what each end of a connection
means, in words an admin can act on.

Not L{twisted.application.internet.ClientService}: it counts the failed
attempts only until a TCP connection is made, while a component connection
can fail after that (a refused secret, an unknown host, an untrusted TLS
certificate), so its retry counter stayed at 1 and its backoff never grew;
and it logs each retry itself ("Scheduling retry 3 to connect <...Endpoint
object at 0x...> in 3.6440987264640596 seconds"), without the reason or
the address, through a logger it offers no public way to replace. The
state machine below is small enough to own, and each of its events is
logged once, with the proxy, the endpoint and the reason.
"""

from collections.abc import Callable
from enum import Enum

from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StreamError

from client_proxy.config import endpointFields
from client_proxy.keepalive import StandbyWatch

#: Prosody's text when the handshake does not match the secret; ejabberd
#: sends C{not-authorized} without a text for a wrong secret and for a
#: host it does not serve as a component alike.
PROSODY_WRONG_SECRET = "Given token does not match calculated token"


def describeEndpoint(endpoint: str) -> str:
    """
    A client endpoint string in words, for the log: C{127.0.0.1 port 5347}
    for C{tcp:host=127.0.0.1:port=5347}, C{xmpp.example.org port 5347
    (TLS)} for C{tls:...}, the path for C{unix:path=...}, and the string
    itself for any other kind.
    """
    kind, args, kwargs = endpointFields(endpoint)
    if kind in ("tcp", "tls"):
        host = kwargs.get("host", args[0] if args else "?")
        port = kwargs.get("port", args[1] if len(args) > 1 else "?")
        return "%s port %s%s" % (host, port, " (TLS)" if kind == "tls" else "")
    if kind == "unix":
        return kwargs.get("path", args[0] if args else endpoint)
    return endpoint


def tlsHost(endpoint: str) -> str | None:
    """
    The name a C{tls:} endpoint checks the server's certificate for, or
    C{None} for an endpoint without TLS.
    """
    kind, args, kwargs = endpointFields(endpoint)
    if kind != "tls":
        return None
    return kwargs.get("host", args[0] if args else None)


class End:
    """
    Why a connection attempt, or a connection, ended: C{reason} in a few
    fixed words (the C{reason} of the log event), C{detail} in a sentence,
    and the log level it deserves: an error when the admin must change
    something (the secret, the component's host, the certificates), a
    warning when the server may come back by itself.
    """

    def __init__(self, reason: str, detail: str, level: LogLevel = LogLevel.warn) -> None:
        self.reason = reason
        self.detail = detail
        self.level = level


def _tlsEnd(value: BaseException, host: str | None) -> End | None:
    """
    The end of a TLS connection whose handshake failed, or C{None} if
    C{value} is no TLS error.
    """
    try:
        from OpenSSL.SSL import Error as SSLError
        from service_identity import VerificationError
    except ImportError:  # no TLS support installed: no TLS endpoint either
        return None
    name = host or "the server"
    if isinstance(value, VerificationError):
        return End(
            "TLS certificate name mismatch",
            "the server's TLS certificate is not valid for %s: it names another host; give "
            "the endpoint a host= the certificate names" % (name,),
            LogLevel.error,
        )
    if not isinstance(value, SSLError):
        return None
    # pyOpenSSL: a list of (library, function, reason) tuples.
    reasons = [entry[-1] for entry in (value.args[0] if value.args else []) if entry]
    if "certificate verify failed" in reasons:
        return End(
            "TLS certificate not trusted",
            "the server's TLS certificate for %s is not trusted (certificate verify failed): "
            "give the folder of the CA that signed it with trustRoots=DIR in the endpoint" % (name,),
            LogLevel.error,
        )
    return End(
        "TLS handshake failed",
        "the TLS handshake with %s failed: %s" % (name, ", ".join(map(str, reasons)) or value),
        LogLevel.error,
    )


def connectionEnd(reason: Failure, host: str | None = None) -> End:
    """
    Why a connection attempt failed, or a connection was lost, from the
    failure Twisted gives.

    @param host: the name a TLS endpoint checks the certificate for.
    """
    value = reason.value
    tls = _tlsEnd(value, host)
    if tls is not None:
        return tls
    if isinstance(value, error.ConnectionRefusedError):
        return End("connection refused", "connection refused")
    if isinstance(value, error.DNSLookupError):
        return End("DNS failure", "DNS lookup failed: %s" % (value.args[0] if value.args else value,))
    if isinstance(value, (error.TimeoutError, error.TCPTimedOutError)):
        return End("timed out", "no answer from the server: timed out")
    if isinstance(value, error.ConnectionAborted):
        return End("connection aborted", "connection aborted")
    if isinstance(value, error.ConnectionDone):
        return End("connection closed", "the server closed the connection")
    if isinstance(value, error.ConnectionLost):
        return End("connection lost", "connection lost")
    if isinstance(value, error.ConnectError):
        return End("cannot connect", str(value).strip() or type(value).__name__)
    return End("connection failed", "%s: %s" % (type(value).__name__, value))


def streamErrorEnd(failure: Failure, jid: str) -> End:
    """
    Why the server ended the stream with a stream error (RFC 6120, 4.9),
    for the component C{jid}.
    """
    value = failure.value
    if not isinstance(value, StreamError):
        return End(
            "stream error",
            "The stream of %s broke: %s" % (jid, failure.getErrorMessage()),
            LogLevel.error,
        )
    condition, text = value.condition, value.text
    if condition == "not-authorized" and text == PROSODY_WRONG_SECRET:
        return End(
            "secret refused",
            "Authentication failed: the server refused the secret for %s" % (jid,),
            LogLevel.error,
        )
    if condition == "not-authorized":
        return End(
            "handshake refused",
            "Authentication failed: the server refused the handshake for %s: the secret "
            "is wrong, or the server does not serve %s as a component (ejabberd's log "
            "says which)" % (jid, jid),
            LogLevel.error,
        )
    if condition in ("host-unknown", "improper-addressing"):
        return End(
            "host unknown",
            "Authentication failed: the server does not serve %s as a component (%s)"
            % (jid, condition),
            LogLevel.error,
        )
    return End(
        "stream error: " + str(condition),
        "The server ended the stream of %s with %s%s"
        % (jid, condition, " (%s)" % (text,) if text else ""),
        LogLevel.error,
    )


class ConnectionState(Enum):
    """
    Where a L{ComponentConnection} is.
    """

    STOPPED = "stopped"
    CONNECTING = "connecting"
    AUTHENTICATED = "authenticated"
    STANDBY = "standby"
    BACKING_OFF = "backing off"


#: The pace of reconnection: 1.5 s before the first retry, 1.5 times more
#: before each next one, at most a minute, plus up to a second at random
#: so that many proxies do not come back all at once.
DEFAULT_RETRY_POLICY = backoffPolicy(initialDelay=1.0, maxDelay=60.0)


class ComponentConnection(Service):
    """
    Keeps one component connection up: connects to C{endpoint} with
    C{factory}, and when an attempt fails or the connection ends, connects
    again at a pace set by how it ended.

      - An attempt that fails, or a connection that ends before it is
        authenticated (a refused secret, an unknown host, an untrusted
        certificate), counts: retry I{n} waits C{retryPolicy(n)}, growing.
        A server that accepts the connection and then closes it (XEP-0114:
        C{not-authorized}) is thus not retried at once for ever.
      - An authenticated connection that is lost is retried as retry 1.
      - A server that allows one connection per component host (Prosody)
        ends a second one with C{conflict}: this connection is then on
        standby, ready to take over when the other one goes. It waits the
        short fixed C{standbyInterval} between tries, not the growing
        backoff meant for a server that is down, and says so once. With a
        L{standbyWatch} (L{client_proxy.keepalive.StandbyWatch}) it does
        not try at all while the watch can tell that the other connection
        is there: each try writes an error in Prosody's log.

    Standby lasts as long as each connection ends in C{conflict}: any other
    end brings back the growing backoff and its log lines.

    Every event is logged once, with the fields C{proxy} (the proxy's
    JID), C{event}, C{reason} (for an end), C{endpoint} (in words),
    C{retry} and C{delay}: failures at warning or error level, recoveries
    at info.

    @ivar state: a L{ConnectionState}.
    @ivar retry: the number of the next attempt since the last
        authenticated connection (0 before the first attempt).
    @ivar failures: attempts in a row that did not end authenticated.
    @ivar standby: whether the last connection ended in C{conflict}.
    @ivar standbyWatch: a L{client_proxy.keepalive.StandbyWatch}, or
        C{None} to try again every C{standbyInterval} seconds on standby.
    @ivar stateObservers: called with this connection at every change of
        state.
    """

    log = Logger()

    def __init__(
        self,
        factory: xmlstream.XmlStreamFactory,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        jid: str,
        where: str,
        proxy: str | None = None,
        standbyInterval: float = 1.0,
        retryPolicy: Callable[[int], float] = DEFAULT_RETRY_POLICY,
        tlsHost: str | None = None,
    ) -> None:
        """
        @param jid: the JID this connection authenticates as.
        @param where: the endpoint in words (L{describeEndpoint}).
        @param proxy: the JID of the proxy it belongs to, if not C{jid}
            (an instance's own connection).
        @param tlsHost: the name a TLS endpoint checks the certificate for.
        """
        self.factory = factory
        self.endpoint = endpoint
        self.clock = clock
        self.jid = jid
        self.where = where
        self.proxy = proxy or jid
        self.standbyInterval = standbyInterval
        self.retryPolicy = retryPolicy
        self.tlsHost = tlsHost
        self.state = ConnectionState.STOPPED
        self.retry = 0
        self.failures = 0
        self.standby = False
        self.standbyWatch: StandbyWatch | None = None
        self.stateObservers: list[Callable[[ComponentConnection], None]] = []
        self._attempt: Deferred | None = None
        self._timer: IDelayedCall | None = None
        self._stream: xmlstream.XmlStream | None = None
        self._streamError: Failure | None = None
        self._closed: list[Deferred] = []
        factory.addBootstrap(xmlstream.STREAM_CONNECTED_EVENT, self.streamConnected)
        factory.addBootstrap(xmlstream.STREAM_AUTHD_EVENT, self.streamAuthenticated)
        factory.addBootstrap(xmlstream.STREAM_ERROR_EVENT, self.streamErrorReceived)
        factory.addBootstrap(xmlstream.STREAM_END_EVENT, self.streamEnded)

    def isAuthenticated(self) -> bool:
        """
        Whether the connection is up and authenticated (for the
        C{client_proxy_connected} gauge).
        """
        return self.state is ConnectionState.AUTHENTICATED

    def _setState(self, state: ConnectionState) -> None:
        self.state = state
        for observer in list(self.stateObservers):
            observer(self)

    def _emit(self, level: LogLevel, event: str, text: str, **fields: object) -> None:
        self.log.emit(
            level,
            "{text}",
            text=text,
            proxy=self.proxy,
            jid=self.jid,
            event=event,
            endpoint=self.where,
            **fields,
        )

    # The service

    def startService(self) -> None:
        super().startService()
        self.retry = self.failures = 0
        self.standby = False
        self._connect()

    def stopService(self) -> Deferred:
        """
        Stop connecting, and close the connection if there is one: the
        L{Deferred} fires once it is closed. The stream's closing tag is
        the caller's to send first (see L{client_proxy.service.ProxyService}).
        """
        super().stopService()
        self._setState(ConnectionState.STOPPED)
        self._cancelTimer()
        self._unwatch()
        if self._attempt is not None:
            self._attempt.cancel()
        transport = None if self._stream is None else self._stream.transport
        if transport is None:
            return succeed(None)
        closed: Deferred = Deferred()
        self._closed.append(closed)
        transport.loseConnection()
        return closed

    # Attempts

    def _connect(self) -> None:
        self._timer = None
        self._unwatch()
        self._streamError = None
        self._setState(ConnectionState.CONNECTING)
        attempt = self._attempt = self.endpoint.connect(self.factory)
        attempt.addCallbacks(self._transportConnected, self.connectionFailed)

    def _transportConnected(self, protocol: object) -> None:
        self._attempt = None

    def connectionFailed(self, reason: Failure) -> None:
        """
        The attempt did not even make a connection: the server is down, its
        name does not resolve, or the attempt was cancelled by a stop.
        """
        self._attempt = None
        if self.state is ConnectionState.STOPPED or reason.check(CancelledError):
            return
        end = connectionEnd(reason, self.tlsHost)
        self._failed(end, "Cannot connect %s to %s: %s" % (self.jid, self.where, end.detail))

    def _failed(self, end: End, text: str) -> None:
        """
        An attempt failed: back off, longer at each failure in a row.
        """
        self.standby = False
        self.retry += 1
        self.failures += 1
        self._backOff("connect_failed", end.level, text, end.reason)

    def _backOff(self, event: str, level: LogLevel, text: str, reason: str) -> None:
        delay = round(self.retryPolicy(self.retry), 1)
        self._emit(
            level,
            event,
            "%s; retry %d in %.1f s" % (text, self.retry, delay),
            reason=reason,
            retry=self.retry,
            delay=delay,
        )
        self._setState(ConnectionState.BACKING_OFF)
        self._timer = self.clock.callLater(delay, self._connect)

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # The stream (bootstrap events of the factory)

    def streamConnected(self, stream: xmlstream.XmlStream) -> None:
        self._stream = stream

    def streamAuthenticated(self, stream: xmlstream.XmlStream) -> None:
        """
        XEP-0114: the server accepted the handshake; the component is
        served here.
        """
        if self.standby:
            self.standby = False
            self._emit(
                LogLevel.info, "takeover", "Taking over: %s is served here now" % (self.jid,)
            )
        failures, self.retry, self.failures = self.failures, 0, 0
        after = " after %d failed attempts" % (failures,) if failures else ""
        self._emit(
            LogLevel.info,
            "authenticated",
            "Authenticated as %s at %s%s" % (self.jid, self.where, after),
        )
        self._setState(ConnectionState.AUTHENTICATED)

    def streamErrorReceived(self, reason: Failure) -> None:
        """
        RFC 6120, 4.9: the server ends the stream with an error; the end of
        the connection follows.
        """
        self._streamError = reason

    def streamEnded(self, reason: Failure) -> None:
        self._stream = None
        if self.state is ConnectionState.STOPPED:
            self._emit(
                LogLevel.info,
                "stopped",
                "Disconnected from %s (%s): stopped" % (self.where, self.jid),
            )
            closed, self._closed = self._closed, []
            for d in closed:
                d.callback(None)
            return
        streamError = self._streamError
        if streamError is not None and getattr(streamError.value, "condition", None) == "conflict":
            self.conflictReceived()
            return
        if streamError is not None:
            end = streamErrorEnd(streamError, self.jid)
        else:
            end = connectionEnd(reason, self.tlsHost)
        if self.state is ConnectionState.AUTHENTICATED:
            self.standby = False
            self.retry = 1
            self._backOff(
                "disconnected",
                max(end.level, LogLevel.warn),
                "Disconnected from %s (%s): %s" % (self.where, self.jid, end.detail),
                end.reason,
            )
        elif streamError is not None:
            self._failed(end, "%s (server at %s)" % (end.detail, self.where))
        else:
            if end.reason == "connection closed":
                end = End(
                    "closed before authentication",
                    "the server closed the connection before authenticating %s (if the port "
                    "speaks TLS, the endpoint must be tls:)" % (self.jid,),
                )
            self._failed(end, "Cannot connect %s to %s: %s" % (self.jid, self.where, end.detail))

    # Standby

    def conflictReceived(self) -> None:
        """
        Another connection serves this JID: stand by, and take over when it
        goes.
        """
        self.retry = 0
        self.failures = 0
        if not self.standby:
            self.standby = True
            if self.standbyWatch is not None:
                how = "watching it from %s with a ping every %s s" % (
                    self.standbyWatch.instance, _seconds(self.standbyInterval))
            else:
                how = (
                    "trying to take over every %s s (on Prosody each try writes an error "
                    "in the server's log: give this instance an instance_jid for a quiet "
                    "standby)" % (_seconds(self.standbyInterval),)
                )
            self._emit(
                LogLevel.info,
                "standby",
                "On standby: another connection serves %s; %s" % (self.jid, how),
                reason="conflict",
            )
        self._setState(ConnectionState.STANDBY)
        if self.standbyWatch is None:
            self._timer = self.clock.callLater(self.standbyInterval, self._connect)
        else:
            self.standbyWatch.watch(self.takeOver, self.watchLost)

    def takeOver(self) -> None:
        """
        The server says nobody serves this JID any more: connect now.
        """
        if self.state is ConnectionState.STANDBY:
            self._cancelTimer()
            self._emit(
                LogLevel.info,
                "takeover",
                "Nobody serves %s any more: connecting to take over" % (self.jid,),
            )
            self._connect()

    def watchLost(self) -> None:
        """
        The standby watch cannot watch for now (its own connection is down):
        try again after the standby interval.
        """
        if self.state is ConnectionState.STANDBY and self._timer is None:
            self._timer = self.clock.callLater(self.standbyInterval, self._connect)

    def _unwatch(self) -> None:
        if self.standbyWatch is not None:
            self.standbyWatch.stop()


def _seconds(value: float) -> str:
    return "%g" % (value,)
