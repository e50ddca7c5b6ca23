"""
A small blocking XMPP client for integration tests: plain TCP, SASL PLAIN,
one reader thread that buffers received stanzas for L{Client.wait_for}.
"""

import base64
import itertools
import socket
import threading
import traceback
import xml.etree.ElementTree as ET
from typing import Callable, Iterator
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape, quoteattr

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_ROSTER = "jabber:iq:roster"

#: Source of IQ ids unique in the test process.
_ids = itertools.count(1)


def tag(el: Element) -> str:
    """
    The local name of C{el}'s tag: C{iq} for C{{jabber:client}iq}.
    """
    return el.tag.rpartition("}")[2]


def _error(el: Element) -> Element | None:
    """
    The C{<error/>} child of a stanza, if any.
    """
    return next((child for child in el if tag(child) == "error"), None)


def error_condition(el: Element) -> str | None:
    """
    The defined condition of an error stanza (C{service-unavailable}...),
    or C{None} if C{el} carries no error.
    """
    error = _error(el)
    if error is None:
        return None
    return next(
        (tag(child) for child in error if child.tag.startswith("{%s}" % NS_STANZAS) and tag(child) != "text"),
        None,
    )


def error_type(el: Element) -> str | None:
    """
    The C{type} of the C{<error/>} of an error stanza (C{cancel}...), or
    C{None} if C{el} carries no error.
    """
    error = _error(el)
    return None if error is None else error.get("type")


def bare(jid: str) -> str:
    """
    The bare JID of C{jid}.
    """
    return jid.partition("/")[0]


def dump(el: Element) -> str:
    """
    C{el} as XML text, for failure messages.
    """
    return ET.tostring(el, encoding="unicode")


class StreamReader:
    """
    An XML stream read from a blocking socket, one stanza at a time: the
    stream's root, then each of its children, which are taken off the
    root so that a long stream holds no more than one stanza.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.restart()

    def restart(self) -> None:
        """
        A new XML document follows: the stream restarts (after SASL
        success, RFC 6120, 6.4.6).
        """
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self._root: Element | None = None

    def events(self) -> Iterator[tuple[str, Element]]:
        """
        C{("root", el)} when the stream opens, C{("stanza", el)} for each
        stanza, C{("end", root)} when the peer closes the stream; the
        iteration ends when the connection does. Socket errors propagate.
        """
        while True:
            data = self._sock.recv(65536)
            if not data:
                return
            self._parser.feed(data)
            for event, el in self._parser.read_events():
                if event == "start":
                    self._depth += 1
                    if self._depth == 1:
                        self._root = el
                        yield "root", el
                    continue
                self._depth -= 1
                if self._depth == 0:
                    yield "end", el
                elif self._depth == 1:
                    assert self._root is not None, "a stanza is inside the root"
                    self._root.remove(el)
                    yield "stanza", el


class Client:
    """
    One client connection, for user C{user@domain} and resource C{resource}.

    Received stanzas go to L{on_stanza} if set (it runs in the reader
    thread; it returns C{True} when it has handled the stanza), else to a
    buffer read by L{wait_for}, L{iq} and L{received}.

    @ivar jid: the full JID the server bound, once connected.
    @ivar on_stanza: hook called for every stanza received after resource
        binding and roster retrieval.
    """

    def __init__(
        self,
        port: int,
        user: str,
        resource: str,
        domain: str = "example.org",
        password: str = "pw",
        host: str = "127.0.0.1",
    ) -> None:
        self.port = port
        self.user = user
        self.resource = resource
        self.domain = domain
        self.password = password
        self.host = host
        self.jid = ""
        self.on_stanza: Callable[["Client", Element], bool] | None = None
        self._hooks_enabled = False
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._buffer: list[Element] = []
        #: Why the stream ended (C{None} while it is open).
        self._closed: str | None = None
        self._restart = False
        self._reader: threading.Thread | None = None

    def __repr__(self) -> str:
        return "<Client %s>" % (self.jid or "%s@%s/%s" % (self.user, self.domain, self.resource),)

    # Connection

    def connect(self, presence: bool = True, priority: int = 0) -> "Client":
        """
        Log in: stream, SASL PLAIN, stream restart, resource binding, roster
        retrieval (so that the server delivers subscription requests to
        this resource, RFC 6121 3.1.3), then initial presence with
        C{priority} if C{presence} is true.
        """
        self._sock = socket.create_connection((self.host, self.port), timeout=10)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, name="xmpp-%s" % (self.user,), daemon=True)
        self._reader.start()

        self._open_stream()
        self.wait_for(lambda el: el.tag == "{%s}features" % NS_STREAMS)
        credentials = base64.b64encode(("\0%s\0%s" % (self.user, self.password)).encode()).decode()
        self.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, credentials))
        outcome = self.wait_for(lambda el: el.tag in ("{%s}success" % NS_SASL, "{%s}failure" % NS_SASL))
        if tag(outcome) != "success":
            raise AssertionError("%r: authentication failed: %s" % (self, dump(outcome)))

        self._open_stream()
        self.wait_for(lambda el: el.tag == "{%s}features" % NS_STREAMS)
        bound = self._request(
            "<iq type='set' id=%s><bind xmlns='%s'><resource>%s</resource></bind></iq>",
            NS_BIND,
            escape(self.resource),
        )
        jid = bound.find("{%s}bind/{%s}jid" % (NS_BIND, NS_BIND))
        if bound.get("type") != "result" or jid is None:
            raise AssertionError("%r: resource binding failed: %s" % (self, dump(bound)))
        self.jid = jid.text

        roster = self._request("<iq type='get' id=%s><query xmlns='%s'/></iq>", NS_ROSTER)
        if roster.get("type") != "result":
            raise AssertionError("%r: roster retrieval failed: %s" % (self, dump(roster)))
        self._hooks_enabled = True
        if presence:
            self.send("<presence><priority>%d</priority></presence>" % (priority,))
        return self

    def _open_stream(self) -> None:
        """
        Send a stream header (initial, or after SASL success).
        """
        self.send(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
            " xmlns:stream='%s' to=%s version='1.0'>" % (NS_STREAMS, quoteattr(self.domain))
        )

    def _request(self, template: str, *args: str) -> Element:
        """
        Send an IQ built from C{template}, whose first C{%s} is the (quoted)
        id, and return its answer.
        """
        id = "iq-%d" % (next(_ids),)
        self.send(template % ((quoteattr(id),) + args))
        return self.wait_for(lambda el: tag(el) == "iq" and el.get("id") == id and el.get("type") in ("result", "error"))

    def close(self) -> None:
        """
        Log out cleanly: unavailable presence, end of stream, wait for the
        server to end its stream (2 s at most), close the socket.
        """
        try:
            self.send("<presence type='unavailable'/></stream:stream>")
        except OSError:
            pass
        self._reader.join(2)
        self._sock.close()

    def kill(self) -> None:
        """
        Drop the connection without any goodbye.
        """
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._reader.join(2)

    # Sending and receiving

    def send(self, xml: str) -> None:
        """
        Send raw XML text. Thread-safe.
        """
        with self._send_lock:
            self._sock.sendall(xml.encode("utf-8"))

    def iq(
        self,
        to: str,
        payload: str = "<query xmlns='urn:test'/>",
        type: str = "get",
        timeout: float = 5.0,
    ) -> Element:
        """
        Send an IQ with a fresh id and return its answer (result or error).
        """
        id = "iq-%d" % (next(_ids),)
        self.send("<iq type=%s id=%s to=%s>%s</iq>" % (quoteattr(type), quoteattr(id), quoteattr(to), payload))
        return self.wait_for(
            lambda el: tag(el) == "iq" and el.get("id") == id and el.get("type") in ("result", "error"),
            timeout,
        )

    def wait_for(self, predicate: Callable[[Element], bool], timeout: float = 5.0) -> Element:
        """
        Take from the buffer the first stanza, received already or within
        C{timeout} seconds, that matches C{predicate}.

        @raise AssertionError: none came in time, or the stream ended; the
            message lists what was received.
        """
        with self._cond:
            if not self._cond.wait_for(
                lambda: any(predicate(el) for el in self._buffer) or self._closed is not None,
                timeout,
            ):
                raise AssertionError("%r: nothing matching after %s s; received:\n%s" % (self, timeout, self._dump()))
            for el in self._buffer:
                if predicate(el):
                    self._buffer.remove(el)
                    return el
            raise AssertionError("%r: stream ended (%s); received:\n%s" % (self, self._closed, self._dump()))

    def sync(self, timeout: float = 5.0) -> None:
        """
        A round trip with the server (an IQ to its domain; any answer will
        do): every stanza the server sent this client before it answered
        has been received, buffered or handled, when this returns.
        """
        self.iq(self.domain, "<ping xmlns='urn:xmpp:ping'/>", timeout=timeout)

    def received(self) -> list[Element]:
        """
        The buffered stanzas not taken by L{wait_for} yet.
        """
        with self._cond:
            return list(self._buffer)

    def _dump(self) -> str:
        """
        The buffer as text; the caller holds the condition's lock.
        """
        return "\n".join(dump(el) for el in self._buffer) or "(nothing)"

    def handle(self, stanza: Element) -> bool:
        """
        Called in the reader thread for every stanza once connected; C{True}
        means handled (not buffered). Calls L{on_stanza}.
        """
        return self.on_stanza is not None and self.on_stanza(self, stanza)

    def _read(self) -> None:
        """
        The reader thread: parse the stream, deliver each top-level element.
        """
        reader = StreamReader(self._sock)
        reason = "connection closed"
        try:
            for event, el in reader.events():
                if event == "end":
                    reason = "server ended the stream"
                    return
                if event != "stanza":
                    continue
                if el.tag == "{%s}error" % NS_STREAMS:
                    reason = "stream error: " + dump(el)
                    return
                if el.tag == "{%s}success" % NS_SASL:
                    # The server's next bytes are a new XML document.
                    reader.restart()
                if not (self._hooks_enabled and self.handle(el)):
                    with self._cond:
                        self._buffer.append(el)
                        self._cond.notify_all()
        except OSError as e:
            reason = "socket error: %s" % (e,)
        except Exception:
            reason = "reader failed:\n" + traceback.format_exc()
        finally:
            with self._cond:
                self._closed = reason
                self._cond.notify_all()


class Responder(Client):
    """
    An implementing client: approves every presence subscription request
    (C{subscribed} to the requester's bare JID) and answers every IQ get or
    set with::

        <iq type='result' id=ID to=FROM>
          <served xmlns='urn:test' by=RESOURCE requester=FROM/>
        </iq>

    where C{FROM} is the request's C{from} and C{RESOURCE} this client's
    resource. Roster pushes are acknowledged with an empty result. The
    requests and subscription requests it handles are recorded, not
    buffered.

    @param delay: seconds to wait before answering an IQ.
    @param answer: if false, record IQs but never answer them.
    @ivar requests: the IQ get and set requests received (roster pushes
        excepted).
    @ivar subscribe_requests: the C{subscribe} presences received.
    """

    def __init__(
        self,
        port: int,
        user: str,
        resource: str,
        delay: float = 0.0,
        answer: bool = True,
        **kw: str,
    ) -> None:
        super().__init__(port, user, resource, **kw)
        self.delay = delay
        self.answer = answer
        self.requests: list[Element] = []
        self.subscribe_requests: list[Element] = []
        self._lock = threading.Condition()

    def handle(self, stanza: Element) -> bool:
        """
        Approve subscription requests, answer IQ requests, then fall back to
        L{Client.handle}.
        """
        kind, type, sender = tag(stanza), stanza.get("type"), stanza.get("from", "")
        if kind == "presence" and type == "subscribe":
            with self._lock:
                self.subscribe_requests.append(stanza)
            self.send("<presence type='subscribed' to=%s/>" % (quoteattr(bare(sender)),))
            return True
        if kind == "iq" and type in ("get", "set"):
            if stanza.find("{%s}query" % NS_ROSTER) is not None:
                self.send("<iq type='result' id=%s/>" % (quoteattr(stanza.get("id", "")),))
                return True
            with self._lock:
                self.requests.append(stanza)
                self._lock.notify_all()
            if self.answer:
                self._answer(stanza)
            return True
        return super().handle(stanza)

    def wait_for_requests(self, count: int = 1, timeout: float = 5.0) -> list[Element]:
        """
        Wait until L{requests} holds C{count} requests (or more); them all.

        @raise AssertionError: fewer came in time.
        """
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(
                    "%r: %d requests after %s s, not %d" % (self, len(self.requests), timeout, count)
                )
            return list(self.requests)

    def _answer(self, request: Element) -> None:
        """
        Send the result for C{request}, after L{delay} if set.
        """
        sender = request.get("from", "")
        reply = "<iq type='result' id=%s to=%s><served xmlns='urn:test' by=%s requester=%s/></iq>" % (
            quoteattr(request.get("id", "")),
            quoteattr(sender),
            quoteattr(self.jid.partition("/")[2]),
            quoteattr(sender),
        )
        if self.delay <= 0:
            self.send(reply)
            return
        timer = threading.Timer(self.delay, self._send_late, [reply])
        timer.daemon = True
        timer.start()

    def _send_late(self, xml: str) -> None:
        """
        Send a delayed answer, unless the connection is gone by then.
        """
        try:
            self.send(xml)
        except OSError:
            pass
