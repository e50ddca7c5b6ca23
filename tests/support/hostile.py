"""
A hostile domain for integration tests: a raw component connection
(XEP-0114) to the test Prosody as C{evil.example.org}
(L{harness.prosody.Prosody.hostile}). A component may send from any
JID of its own domain, so it forges as many users and resources as a test
wants, and floods as fast as the socket takes the bytes::

    with HostileComponent.of(prosody) as evil:
        evil.send_all(
            "<presence type='subscribe' from='u%d@%s/x' to='proxy.example.org'/>"
            % (i, evil.domain)
            for i in range(10_000)
        )
        refused = evil.wait_for(lambda el: el.get("type") == "unsubscribed", count=9_000)

Prosody takes one connection per component host: one C{HostileComponent}
at a time per server, closed at the end of the test.
"""

import hashlib
import socket
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from typing import cast
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape, quoteattr

from harness.xmpp import NS_STREAMS, dump, tag

NS_COMPONENT = "jabber:component:accept"


class HostileComponent:
    """
    One component connection for C{domain}, authenticated with C{secret}
    (XEP-0114: the handshake is the hex SHA-1 of the stream id and the
    secret). A reader thread keeps every stanza received, in order, as
    L{xml.etree.ElementTree} elements (their tags in the
    C{jabber:component:accept} namespace).

    @ivar domain: the component's host: every C{from} must be in it.
    """

    def __init__(self, port: int, domain: str, secret: str, host: str = "127.0.0.1") -> None:
        self.port = port
        self.domain = domain
        self.secret = secret
        self.host = host
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._cond = threading.Condition()
        self._stream_id: str | None = None
        self._received: list[Element] = []
        #: Why the stream ended (C{None} while it is open).
        self._closed: str | None = None

    @classmethod
    def of(cls, prosody) -> "HostileComponent":
        """
        The hostile component of a L{harness.prosody.Prosody},
        connected.
        """
        domain, secret = prosody.hostile
        return cls(prosody.component_port, domain, secret).connect()

    def __repr__(self) -> str:
        return "<HostileComponent %s>" % (self.domain,)

    def jid(self, user: str, resource: str = "") -> str:
        """
        A JID of the hostile domain: C{user@domain}, with C{/resource} if
        given.
        """
        return "%s@%s%s" % (user, self.domain, "/" + resource if resource else "")

    # Connection

    def connect(self, timeout: float = 10.0) -> "HostileComponent":
        """
        Open the stream and authenticate (XEP-0114, 3).

        @raise AssertionError: the server refused the handshake or ended
            the stream.
        """
        self._sock = socket.create_connection((self.host, self.port), timeout=timeout)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, name="hostile", daemon=True)
        self._reader.start()
        self.send(
            "<stream:stream xmlns=%s xmlns:stream=%s to=%s>"
            % (quoteattr(NS_COMPONENT), quoteattr(NS_STREAMS), quoteattr(self.domain))
        )
        with self._cond:
            self._cond.wait_for(lambda: self._stream_id or self._closed, timeout)
            stream_id = self._stream_id
        if stream_id is None:
            raise AssertionError("%r: no stream header (%s)" % (self, self._closed))
        digest = hashlib.sha1((stream_id + self.secret).encode("utf-8")).hexdigest()
        self.send("<handshake>%s</handshake>" % (escape(digest),))
        self.wait_for(lambda el: tag(el) == "handshake", timeout=timeout)
        return self

    def close(self) -> None:
        """
        End the stream, wait for the server to end its own (2 s at most),
        and close the socket.
        """
        try:
            self.send("</stream:stream>")
        except OSError:
            pass
        if self._reader is not None:
            self._reader.join(2)
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> "HostileComponent":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Sending

    def send(self, data: str | bytes) -> None:
        """
        Send raw bytes (text is encoded as UTF-8), as they are.
        """
        assert self._sock is not None, "not connected"
        self._sock.sendall(data.encode("utf-8") if isinstance(data, str) else data)

    def send_all(self, stanzas: Iterable[str | bytes], chunk: int = 1 << 16) -> int:
        """
        Send every stanza of C{stanzas} (raw, as L{send} does), joined into
        writes of about C{chunk} bytes: as fast as the server reads.

        @return: how many were sent.
        """
        count = 0
        pending: list[bytes] = []
        size = 0
        for stanza in stanzas:
            data = stanza.encode("utf-8") if isinstance(stanza, str) else stanza
            pending.append(data)
            size += len(data)
            count += 1
            if size >= chunk:
                self.send(b"".join(pending))
                pending, size = [], 0
        if pending:
            self.send(b"".join(pending))
        return count

    # Receiving

    def received(self) -> list[Element]:
        """
        Every stanza received so far (the handshake's answer included), in
        order.
        """
        with self._cond:
            return list(self._received)

    def wait_for(
        self, predicate: Callable[[Element], bool], count: int = 1, timeout: float = 10.0
    ) -> list[Element]:
        """
        Wait until C{count} of the stanzas received match C{predicate}, and
        return them (they stay in L{received}).

        @raise AssertionError: fewer came in time, or the stream ended; the
            message says how many, and shows the last ones received.
        """
        matching: list[Element] = []
        seen = 0

        def enough() -> bool:
            nonlocal seen
            matching.extend(el for el in self._received[seen:] if predicate(el))
            seen = len(self._received)
            return len(matching) >= count or self._closed is not None

        with self._cond:
            self._cond.wait_for(enough, timeout)
            if len(matching) < count:
                raise AssertionError(
                    "%r: %d of %d matching stanzas after %s s (%s); the last received:\n%s"
                    % (
                        self,
                        len(matching),
                        count,
                        timeout,
                        self._closed or "stream open",
                        "\n".join(dump(el) for el in self._received[-5:]) or "(nothing)",
                    )
                )
            return matching[:count]

    def _read(self) -> None:
        """
        The reader thread: the stream header gives the stream id; each
        child of the stream root is a stanza.
        """
        assert self._sock is not None
        parser: ET.XMLPullParser[Element] = ET.XMLPullParser(events=("start", "end"))
        depth = 0
        reason = "connection closed"
        try:
            while data := self._sock.recv(65536):
                parser.feed(data)
                stanzas: list[Element] = []
                for event, el in cast(Iterator[tuple[str, Element]], parser.read_events()):
                    depth += 1 if event == "start" else -1
                    if event == "start" and depth == 1:
                        root = el
                        self._stream_id = el.get("id")
                    elif event == "end" and depth == 1:
                        root.remove(el)
                        stanzas.append(el)
                    elif depth == 0:
                        reason = "the server ended the stream"
                with self._cond:
                    self._received.extend(stanzas)
                    self._cond.notify_all()
        except OSError as e:
            reason = "socket error: %s" % (e,)
        except ET.ParseError as e:
            reason = "not XML: %s" % (e,)
        finally:
            with self._cond:
                self._closed = reason
                self._cond.notify_all()
