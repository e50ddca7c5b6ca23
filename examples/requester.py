#!/usr/bin/env python3
"""
Send echo requests to client-proxy and print who served each one.

Each request is an IQ get to the component's JID::

    <iq type='get' id='echo-1' to='proxy.example.org'>
      <echo xmlns='urn:example:echo'>hello 1</echo>
    </iq>

The component forwards it to one online resource of the implementing
client (see implementing_client.py) and sends the answer back from the
address the request was sent to. Requests go one at a time, so each round
trip is measured alone. Exits with 1 if any request failed.

Same login options as implementing_client.py (TLS by default, the password
from a file or C{XMPP_PASSWORD}).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from twisted.internet import defer, endpoints, task
from twisted.words.protocols.jabber import error, xmlstream
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

sys.path.insert(0, str(Path(__file__).resolve().parent))
from implementing_client import (  # noqa: E402
    NS_ECHO,
    add_connection_arguments,
    client_factory,
    describe,
    read_password,
    show_stanzas,
)


async def login(
    reactor, jid: JID, password: str, host: str, port: int, tls: bool, stanzas: bool
) -> xmlstream.XmlStream:
    """
    Connect and log in; the authenticated stream.
    """
    factory = client_factory(jid, password, tls)
    if stanzas:
        show_stanzas(factory, lambda line: print(line, flush=True))
    ready: defer.Deferred = defer.Deferred()
    factory.addBootstrap(xmlstream.STREAM_AUTHD_EVENT, ready.callback)
    factory.addBootstrap(xmlstream.INIT_FAILED_EVENT, ready.errback)

    def ended(reason) -> None:
        if not ready.called:
            ready.errback(reason)

    factory.addBootstrap(xmlstream.STREAM_END_EVENT, ended)
    await endpoints.HostnameEndpoint(reactor, host, port).connect(factory)
    return await ready


async def echo(
    reactor, xs: xmlstream.XmlStream, to: str, id: str, text: str, timeout: float
) -> domish.Element:
    """
    Send one echo request; its C{<echo/>} answer.

    @raise error.StanzaError: the answer is an error.
    """
    iq = xmlstream.IQ(xs, "get")
    iq["id"] = id
    iq.addElement((NS_ECHO, "echo"), content=text)
    d = iq.send(to)
    d.addTimeout(timeout, reactor)
    result = await d
    answer = next(result.elements(NS_ECHO, "echo"), None)
    if answer is None:
        raise ValueError("the result carries no <echo/>: " + result.toXml())
    return answer


async def run(reactor, args: argparse.Namespace) -> int:
    jid = JID(args.jid)
    try:
        xs = await login(
            reactor,
            jid,
            read_password(args),
            args.host or jid.host,
            args.port,
            tls=not args.no_tls,
            stanzas=args.show_stanzas,
        )
    except Exception as e:
        print("requester: could not log in as %s: %s" % (jid.full(), describe(e)), file=sys.stderr)
        return 1
    me = xs.authenticator.jid.full()
    print("Logged in as %s; sending %d echo requests to %s" % (me, args.count, args.to), flush=True)
    print("  #  %-32s %10s  %s" % ("served by", "round trip", "answer"))
    served: Counter[str] = Counter()
    times: list[float] = []
    failed = 0
    for n in range(1, args.count + 1):
        text = "%s %d" % (args.text, n)
        start = time.perf_counter()
        try:
            answer = await echo(reactor, xs, args.to, "%s%d" % (args.id_prefix, n), text, args.timeout)
        except error.StanzaError as e:
            failed += 1
            print("%3d  error: %s (%s) %s" % (n, e.condition, e.type, e.text or ""), flush=True)
            continue
        except Exception as e:
            failed += 1
            print("%3d  failed: %r" % (n, e), flush=True)
            continue
        elapsed = (time.perf_counter() - start) * 1000
        times.append(elapsed)
        by, requester = answer.getAttribute("served-by", "?"), answer.getAttribute("requester")
        served[by] += 1
        note = "" if requester == me else "  (the client saw the requester as %r!)" % (requester,)
        print("%3d  %-32s %7.1f ms  %r%s" % (n, by, elapsed, str(answer), note), flush=True)
        if requester != me:
            failed += 1

    # Log out: end the stream, wait (a little) for the server to end its own.
    closed: defer.Deferred = defer.Deferred()
    xs.addOnetimeObserver(xmlstream.STREAM_END_EVENT, lambda reason: closed.callback(None))
    xs.sendFooter()
    try:
        await closed.addTimeout(2, reactor)
    except defer.TimeoutError:
        xs.transport.abortConnection()
    if times:
        print(
            "%d answered, %d failed; served by: %s; round trip min %.1f / median %.1f / max %.1f ms"
            % (
                len(times),
                failed,
                ", ".join("%s (%d)" % (by, count) for by, count in sorted(served.items())),
                min(times),
                statistics.median(times),
                max(times),
            )
        )
    else:
        print("no request was answered")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_connection_arguments(parser, "alice@example.org/requester")
    parser.add_argument(
        "--to", default="proxy.example.org", help="the component's JID (default: %(default)s)"
    )
    parser.add_argument("--count", type=int, default=6, help="requests to send (default: %(default)s)")
    parser.add_argument("--text", default="hello", help="text to echo; the request number is added")
    parser.add_argument("--id-prefix", default="echo-", help="IQ ids are this and the number")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer")
    args = parser.parse_args(argv)
    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor, args)).addCallback(_exit))


def _exit(code: int) -> None:
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
