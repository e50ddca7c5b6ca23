#!/usr/bin/env python3
"""
A sample implementing client for client-proxy, on Twisted Words and wokkel.

Run one or more of these with the same account (each with its own
resource): client-proxy, started with C{--target} set to that account,
sends each request made to the component to one of them. The protocol
rules an implementing client follows:

 1. Log in, fetch the roster, then send initial presence (RFC 6121, 2.2
    and 4.2). A resource that fetched its roster is "interested"
    (RFC 6121, 3.1.3): the server hands it the presence subscription
    requests waiting for the account.
 2. Approve the component's presence subscription request with
    C{subscribed}, and only the component's (RFC 6121, 3.1.3); others are
    refused with C{unsubscribed}. The component learns which resources are
    online from the presence this subscription lets it see. Approving once
    is enough: the server keeps the subscription in the roster.

    A fleet (many resources of the account, workers) must not all approve
    it: the server delivers the request to every resource online, and
    answers each approval with the presence of every online resource, so
    N workers approving bring N*N presence stanzas to the component (a
    million for 1,000 workers: minutes of the server's time). Let one
    client approve, once, before the fleet starts: run one with
    C{--subscription pre-approve} (RFC 6121, 3.4: the server then answers
    the component's request itself, now and whenever the component asks
    again, and no worker is asked), and the workers with
    C{--subscription ignore}. C{--subscription approve}, the default,
    approves each request as it comes, for a client or a few.
 3. A request comes from C{<component>/<requester's full JID>} (Jabber
    Address Translation), e.g.
    C{from='proxy.example.org/alice@example.org/phone'}: who asked is
    everything after the first C{/}. Answer it like any IQ, to its C{from}
    with its C{id} (RFC 6120, 8.2.3): the component passes the answer on to
    the requester.
 4. Answer every IQ get or set exactly once, with a result or an error
    (RFC 6120, 8.2.3); one whose payload is not understood gets
    C{service-unavailable} (RFC 6120, 8.4). Never answer a result or an
    error.

This one understands one request, in namespace C{urn:example:echo}::

    <iq type='get' id='1' to='proxy.example.org'>
      <echo xmlns='urn:example:echo'>hello</echo>
    </iq>

and answers it with the text, who asked and who served::

    <iq type='result' id='1' to='proxy.example.org/alice@example.org/phone'>
      <echo xmlns='urn:example:echo' requester='alice@example.org/phone'
            served-by='service@example.org/worker-1'>hello</echo>
    </iq>

Security: STARTTLS is required by default, with the server's certificate
checked against the JID's domain. C{--no-tls} sends the password and all
traffic in clear text; use it only with a server on loopback, like the
private Prosody of C{scripts/demo}. The password comes from a file
(C{--password-file}) or the environment (C{XMPP_PASSWORD}), never the
command line, which every user of the machine can read.

Usage::

    XMPP_PASSWORD=secret python3 implementing_client.py \\
        --jid service@example.org/worker-1 --component proxy.example.org

A fleet, approved once by one client before the workers start::

    XMPP_PASSWORD=secret python3 implementing_client.py \\
        --jid service@example.org/setup --subscription pre-approve
    XMPP_PASSWORD=secret python3 implementing_client.py \\
        --jid service@example.org/worker-N --subscription ignore
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, TextIO

from twisted.application.internet import ClientService
from twisted.internet import endpoints
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import (
    FilteringLogObserver,
    FileLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    formatEvent,
    globalLogBeginner,
)
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import client, xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel.subprotocols import StreamManager, XMPPHandler
from wokkel.xmppim import PresenceProtocol, RosterClientProtocol
from zope.interface import implementer

NS_ECHO = "urn:example:echo"
PASSWORD_VARIABLE = "XMPP_PASSWORD"
LOG_NAMESPACE = "implementing_client"

log = Logger(namespace=LOG_NAMESPACE)


# Connecting: shared with requester.py.


def add_connection_arguments(parser: argparse.ArgumentParser, jid: str) -> None:
    """
    The options every example client takes to log in.
    """
    parser.add_argument("--jid", default=jid, help="full JID to log in as (default: %(default)s)")
    parser.add_argument(
        "--password-file",
        help="file whose first line is the password (default: the %s "
        "environment variable)" % (PASSWORD_VARIABLE,),
    )
    parser.add_argument("--host", help="server to connect to (default: the JID's domain)")
    parser.add_argument("--port", type=int, default=5222, help="c2s port (default: %(default)s)")
    parser.add_argument(
        "--no-tls",
        action="store_true",
        help="do not use STARTTLS: the password and all traffic travel in "
        "clear text. Only for a server on loopback, like the demo's.",
    )
    parser.add_argument(
        "--show-stanzas",
        action="store_true",
        help="print every stanza sent (SEND) and received (RECV) once logged in",
    )


def read_password(args: argparse.Namespace) -> str:
    """
    The password from C{--password-file}, else from C{XMPP_PASSWORD}.

    @raise SystemExit: neither is set.
    """
    if args.password_file:
        with open(args.password_file, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    password = os.environ.get(PASSWORD_VARIABLE)
    if password is None:
        raise SystemExit("give the password with --password-file or %s" % (PASSWORD_VARIABLE,))
    return password
    return password


def client_factory(jid: JID, password: str, tls: bool) -> xmlstream.XmlStreamFactory:
    """
    A stream factory that logs in as C{jid}: STARTTLS (required when
    C{tls}, left out otherwise), SASL, resource binding.

    Twisted's SASL client knows PLAIN and DIGEST-MD5, not SCRAM: PLAIN
    sends the password as it is, so it belongs under TLS.
    """
    authenticator = client.XMPPAuthenticator(jid, password)
    associate = authenticator.associateWithStream

    def associateWithStream(xs: xmlstream.XmlStream) -> None:
        associate(xs)
        xs.initializers = [
            (StartTLS(xs) if tls else None) if isinstance(i, xmlstream.TLSInitiatingInitializer) else i
            for i in xs.initializers
        ]
        xs.initializers = [i for i in xs.initializers if i is not None]

    authenticator.associateWithStream = associateWithStream
    return xmlstream.XmlStreamFactory(authenticator)


class StartTLS(xmlstream.TLSInitiatingInitializer):
    """
    STARTTLS, required, with an error that says so when the server does not
    offer it.
    """

    def initialize(self):
        if self.feature not in self.xmlstream.features:
            raise xmlstream.TLSError(
                "the server does not offer STARTTLS, and TLS is required "
                "(--no-tls turns it off, for a server on loopback only)"
            )
        return super().initialize()


def describe(error: BaseException) -> str:
    """
    A login failure in words.
    """
    return str(error) or repr(error)


def show_stanzas(factory: xmlstream.XmlStreamFactory, write: Callable[[str], None]) -> None:
    """
    Once logged in (never the password exchange), pass each stanza to
    C{write}: C{SEND <xml>} as written to the socket, C{RECV <xml>} as
    parsed.
    """

    def authenticated(xs: xmlstream.XmlStream) -> None:
        def sent(data: bytes) -> None:
            text = data.decode("utf-8")
            if text.startswith(("<iq", "<message", "<presence")):
                write("SEND " + text)

        def received(element: domish.Element) -> None:
            text = element.toXml(
                prefixes=xs.prefixes,
                defaultUri=xs.namespace,
                prefixesInScope=list(xs.prefixes.values()),
            )
            write("RECV " + text)

        xs.rawDataOutFn = sent
        xs.addObserver("/*", received, priority=1000)

    factory.addBootstrap(xmlstream.STREAM_AUTHD_EVENT, authenticated)


def start_logging(prefix: str, out: TextIO = sys.stdout) -> None:
    """
    Log this program's events at info level and others' warnings, one line
    each, to C{out}.
    """

    def format(event: dict) -> str:
        text = "%s: %s\n" % (prefix, formatEvent(event))
        failure = event.get("log_failure")
        if isinstance(failure, Failure):
            text += failure.getTraceback()
        return text

    levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    levels.setLogLevelForNamespace(LOG_NAMESPACE, LogLevel.info)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(FileLogObserver(out, format), [levels])],
        redirectStandardIO=False,
    )


# The implementing client.


def requester_of(request_from: str, component: str) -> str:
    """
    Who asked: the resource of C{<component>/<requester's full JID>},
    everything after the first C{/}; a request that did not come through
    the component was asked by its sender.
    """
    bare, slash, rest = request_from.partition("/")
    return rest if bare == component and slash else request_from


#: What a client does about the component's presence subscription.
SUBSCRIPTION_MODES = {
    "approve": "approve the component's requests as they come",
    "pre-approve": "approve the component in advance, once, unless the roster "
    "shows it approved already (RFC 6121, 3.4), and its requests as they come",
    "ignore": "leave the component's requests to the client that approves them "
    "(the workers of a fleet)",
}


class Subscriptions(PresenceProtocol):
    """
    Approves the component's presence subscription request (but in mode
    C{ignore}); refuses every other one. In mode C{pre-approve}, approves
    the component in advance once the roster is known, unless it shows the
    subscription approved already.
    """

    def __init__(self, component: JID, mode: str = "approve") -> None:
        super().__init__()
        self.component = component
        self.mode = mode

    def rosterReceived(self, roster) -> None:
        item = (roster or {}).get(self.component)
        if self.mode == "pre-approve" and not (item and (item.subscriptionFrom or item.approved)):
            log.info("Approving the presence subscription of {component} in advance",
                     component=self.component.full())
            self.subscribed(self.component)

    def subscribeReceived(self, presence) -> None:
        if presence.sender.userhostJID() != self.component:
            log.info("Refusing the presence subscription of {sender}", sender=presence.sender.full())
            self.unsubscribed(presence.sender.userhostJID())
        elif self.mode == "ignore":
            log.info("Leaving the presence subscription request of {sender} to the client "
                     "that approves it", sender=presence.sender.full())
        else:
            log.info("Approving the presence subscription of {sender}", sender=presence.sender.full())
            self.subscribed(self.component)


def subscription(item) -> str:
    """
    The subscription state of a roster item, as RFC 6121 names it.
    """
    if item.subscriptionTo and item.subscriptionFrom:
        return "both"
    return "to" if item.subscriptionTo else "from" if item.subscriptionFrom else "none"


class Roster(RosterClientProtocol):
    """
    Fetches the roster, shows it to C{subscriptions}, then sends initial
    presence, on every login.
    """

    def __init__(self, subscriptions: Subscriptions) -> None:
        super().__init__()
        self.subscriptions = subscriptions

    def connectionInitialized(self) -> None:
        super().connectionInitialized()
        self.getRoster().addCallbacks(self.rosterReceived, self.rosterFailed)

    def rosterReceived(self, roster) -> None:
        items = ", ".join(
            "%s (subscription %s)" % (item.entity.full(), subscription(item))
            for item in (roster or {}).values()
        )
        log.info(
            "Logged in as {jid}; roster: {items}; sending presence",
            jid=self.xmlstream.authenticator.jid.full(),
            items=items or "empty",
        )
        self.subscriptions.rosterReceived(roster)
        self.send(domish.Element((None, "presence")))

    def rosterFailed(self, failure: Failure) -> None:
        log.failure("Could not fetch the roster; not sending presence", failure)


class Requests(XMPPHandler):
    """
    Answers echo requests; answers any other IQ get or set with
    C{service-unavailable}, unless another handler took it.
    """

    def __init__(self, component: JID) -> None:
        super().__init__()
        self.component = component.full()

    def connectionInitialized(self) -> None:
        self.xmlstream.addObserver("/iq[@type='get']/echo[@xmlns='%s']" % (NS_ECHO,), self.onEcho)
        # Last of all: a handler that answers a request marks it handled.
        self.xmlstream.addObserver("/iq", self.onOther, priority=-100)

    def onEcho(self, iq: domish.Element) -> None:
        iq.handled = True
        sender = iq.getAttribute("from", "")
        requester = requester_of(sender, self.component)
        text = str(next(iq.elements(NS_ECHO, "echo")))
        log.info(
            "Echo request {id} from {requester}: {text!r}",
            id=iq.getAttribute("id"),
            requester=requester,
            text=text,
        )
        answer = xmlstream.toResponse(iq, "result")
        echo = answer.addElement((NS_ECHO, "echo"), content=text)
        echo["requester"] = requester
        echo["served-by"] = self.xmlstream.authenticator.jid.full()
        self.send(answer)

    def onOther(self, iq: domish.Element) -> None:
        if iq.getAttribute("type") not in ("get", "set") or getattr(iq, "handled", False):
            return
        iq.handled = True
        child = next(iq.elements(), None)
        log.info(
            "Refusing a request {id} from {sender} ({payload}): service-unavailable",
            id=iq.getAttribute("id"),
            sender=iq.getAttribute("from"),
            payload="{%s}%s" % (child.uri, child.name) if child is not None else "empty",
        )
        self.send(StanzaError("service-unavailable", "cancel").toResponse(iq))


@implementer(IStreamClientEndpoint)
class LoggingEndpoint:
    """
    An endpoint that logs failed connection attempts (L{ClientService}
    retries them quietly).
    """

    def __init__(self, endpoint: IStreamClientEndpoint, where: str) -> None:
        self.endpoint = endpoint
        self.where = where

    def connect(self, factory):
        def failed(failure: Failure) -> Failure:
            log.warn(
                "Could not connect to {where} ({error}); retrying",
                where=self.where,
                error=failure.getErrorMessage(),
            )
            return failure

        return self.endpoint.connect(factory).addErrback(failed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_connection_arguments(parser, "service@example.org/worker-1")
    parser.add_argument(
        "--component",
        default="proxy.example.org",
        help="the component's JID: only its subscription request is approved "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--subscription",
        choices=sorted(SUBSCRIPTION_MODES),
        default="approve",
        help="; ".join("%s: %s" % item for item in sorted(SUBSCRIPTION_MODES.items()))
        + ". A fleet: one client pre-approve, the workers ignore (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    jid, component = JID(args.jid), JID(args.component)
    password = read_password(args)

    from twisted.internet import reactor

    start_logging(jid.resource or jid.full())
    factory = client_factory(jid, password, tls=not args.no_tls)
    if args.show_stanzas:
        show_stanzas(factory, lambda line: log.info("{line}", line=line))

    manager = StreamManager(factory)
    manager.jid = jid  # RosterClientProtocol checks where roster pushes come from.
    subscriptions = Subscriptions(component, args.subscription)
    for handler in (Roster(subscriptions), subscriptions, Requests(component)):
        handler.setHandlerParent(manager)

    exit_code = 0

    def loginFailed(failure: Failure) -> None:
        nonlocal exit_code
        log.error("Login failed: {error}", error=describe(failure.value))
        exit_code = 1
        reactor.stop()

    factory.addBootstrap(xmlstream.INIT_FAILED_EVENT, loginFailed)
    stopping = loggedIn = False

    def authenticated(xs: xmlstream.XmlStream) -> None:
        nonlocal loggedIn
        loggedIn = True

    def disconnected(reason: Failure) -> None:
        nonlocal loggedIn
        loggedIn = False
        if not stopping:
            log.warn("Disconnected ({reason}); reconnecting", reason=reason.getErrorMessage())

    factory.addBootstrap(xmlstream.STREAM_AUTHD_EVENT, authenticated)
    factory.addBootstrap(xmlstream.STREAM_END_EVENT, disconnected)

    host = args.host or jid.host
    endpoint = LoggingEndpoint(
        endpoints.HostnameEndpoint(reactor, host, args.port), "%s:%d" % (host, args.port)
    )
    connection = ClientService(endpoint, factory)

    def stop() -> object:
        """Go offline cleanly: unavailable presence, end of stream."""
        nonlocal stopping
        stopping = True
        if loggedIn:
            log.info("Stopping: going offline")
            manager.send("<presence type='unavailable'/>")
            manager.xmlstream.sendFooter()
        return connection.stopService()

    connection.startService()
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
