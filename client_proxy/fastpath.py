"""
The fast path: IQs routed as bytes, without building element trees.

Routing an IQ needs only the attributes of its outer tag: the payload is
passed through untouched. Building a L{domish} tree for every stanza and
serializing it again costs more CPU than the XMPP server spends routing
it, so IQs take a shorter way: expat finds where each stanza starts and
ends, and an IQ handler gets the outer tag's attributes and the inner XML
as bytes. Presence may take the same way: a handler gets the attributes
and inner XML of each presence stanza, and takes what it can read so
(the target's available and unavailable presence, which comes by the
thousand from a fleet). Everything else (the stream header, messages, and
any stanza a handler declines) flows on to the ordinary Twisted parser
and its observers, byte for byte as it arrived.
"""

import re
from collections.abc import Callable
from pyexpat import ExpatError, ParserCreate

from twisted.internet.abstract import FileDescriptor
from twisted.python import failure
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish import domish

XML_NS = "http://www.w3.org/XML/1998/namespace"

#: The rest of a start tag after its first byte: attribute values are
#: quoted and may hold a C{>}.
_TAG = re.compile(rb"""<[^'">]*(?:(?:'[^']*'|"[^"]*")[^'">]*)*>""")
_ATTRIBUTE_ESCAPES = re.compile(r"[&<'\n\r\t>]")
_ESCAPES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    "'": "&apos;",
    "\n": "&#10;",
    "\r": "&#13;",
    "\t": "&#9;",
}

STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"

#: The C{error} child of a stanza as expat names it with namespace
#: processing: in the stream's default namespace, declared on the root
#: (and so unknown here), or written out.
_ERROR_NAMES = frozenset(
    ("error", *("%s error" % ns for ns in ("jabber:component:accept", "jabber:client", "jabber:server")))
)

#: Called with a stanza's attributes and inner XML; returns C{True} when
#: it took the stanza, C{False} to let it flow on to the element parser.
StanzaHandler = Callable[[dict[str, str], bytes], bool]
#: A L{StanzaHandler} for IQs.
IQHandler = StanzaHandler


def escape(value: str) -> str:
    """
    Escape an attribute value for single quotes (XML 1.0, section 2.3);
    whitespace is written as character references so that attribute value
    normalization (section 3.3.3) gives it back unchanged.
    """
    if _ATTRIBUTE_ESCAPES.search(value) is None:
        return value
    return _ATTRIBUTE_ESCAPES.sub(lambda m: _ESCAPES[m.group()], value)


def iqBytes(attributes: dict[str, str], inner: bytes) -> bytes:
    """
    Serialize an IQ from its attributes, in their order, and inner XML.
    """
    head = ["<iq"]
    for name, value in attributes.items():
        head += (" ", name, "='", escape(value), "'")
    if inner:
        head.append(">")
        return "".join(head).encode("utf-8") + inner + b"</iq>"
    head.append("/>")
    return "".join(head).encode("utf-8")


def errorIQBytes(
    stanzaID: str | None,
    sender: str,
    recipient: str,
    condition: str,
    errorType: str,
    text: str | None = None,
) -> bytes:
    """
    An IQ error (RFC 6120, 8.3) with a defined condition and optional text.
    """
    attributes = {"type": "error", "from": sender, "to": recipient}
    if stanzaID is not None:
        attributes["id"] = stanzaID
    error = "<error type='%s'><%s xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>" % (
        errorType,
        condition,
    )
    if text:
        error += (
            "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>%s</text>"
            % escape(text)
        )
    return iqBytes(attributes, (error + "</error>").encode("utf-8"))


def errorCondition(inner: bytes) -> str:
    """
    The defined condition of the error in an IQ error's payload (RFC 6120,
    8.3.2): the first child in the stanzas namespace of the C{error}
    element that is a child of the stanza, whatever prefix or attribute
    order it is written with; or C{"undefined-condition"} if there is none.

    The payload may hold other elements first, even ones named like a
    condition: a server may repeat the request's payload in a bounce, and
    that came from the requester.
    """
    found: list[str] = []
    depth = 0
    inError = False

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal depth, inError
        depth += 1
        if depth == 2 and name in _ERROR_NAMES and not found:
            inError = True
        elif depth == 3 and inError and not found:
            namespace, _, local = name.rpartition(" ")
            if namespace == STANZAS_NS and local != "text":
                found.append(local)

    def end(name: str) -> None:
        nonlocal depth, inError
        depth -= 1
        if depth == 1:
            inError = False

    # The error element is in the stream's default namespace, which is
    # declared on the stream's root, not here: with no default namespace
    # declared, expat names it plainly "error".
    parser = ParserCreate(namespace_separator=" ")
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(b"<i>" + inner + b"</i>", True)
    except ExpatError:
        pass
    return found[0] if found else "undefined-condition"


def isBounce(inner: bytes) -> bool:
    """
    Whether an IQ error's payload is what a server bounces to a full JID
    that has gone (RFC 6121, 8.5.3.2.1): an error C{service-unavailable},
    bare (Prosody), or after the request's payload with a text (ejabberd).
    """
    return errorCondition(inner) == "service-unavailable"


def childElements(
    inner: bytes, namespace: str
) -> list[tuple[str, str, dict[str, str], str]] | None:
    """
    The child elements of a stanza in C{namespace} whose inner XML is
    C{inner}, as the fast path gives it: for each, in order, its
    namespace (a child without a declaration of its own is in the
    stanza's), its local name, its attributes and its own text (that of its
    children left out).

    @return: the children, or C{None} if C{inner} is not well-formed on
        its own (it uses a prefix it does not declare, say).
    """
    children: list[tuple[str, str, dict[str, str], str]] = []
    text: list[str] = []
    depth = 0

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth == 2:
            namespace, _, local = name.rpartition(" ")
            children.append((namespace, local, attributes, ""))
            text.clear()

    def end(name: str) -> None:
        nonlocal depth
        if depth == 2 and text:
            namespace, local, attributes, _ = children[-1]
            children[-1] = (namespace, local, attributes, "".join(text))
        depth -= 1

    def characters(data: str) -> None:
        if depth == 2:
            text.append(data)

    parser = ParserCreate(namespace_separator=" ")
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    try:
        parser.Parse(
            b"<s xmlns='" + escape(namespace).encode("utf-8") + b"'>" + inner + b"</s>", True
        )
    except ExpatError:
        return None
    return children


_TEXT_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\r", "&#13;"))


def _escapeText(text: str) -> str:
    """
    Escape character data with the fewest bytes XML 1.0 allows: quotes
    need no escaping in text (section 2.4); a carriage return is written as
    a reference, or the next parser would read it as a line feed.
    """
    for character, reference in _TEXT_ESCAPES:
        if character in text:
            text = text.replace(character, reference)
    return text


def _attribute(name: str, value: str) -> str:
    """
    An attribute in whichever quotes need fewer escapes.
    """
    if "'" in value and value.count('"') < value.count("'"):
        value = escape(value).replace("&apos;", "'").replace('"', "&quot;")
        return ' %s="%s"' % (name, value)
    return " %s='%s'" % (name, escape(value))


def compact(stanza: bytes) -> bytes | None:
    """
    The same stanza, written again with as few bytes as XML allows.

    Servers may write text generously: Prosody writes every C{"} and C{'}
    in text as C{&quot;} and C{&apos;}, six bytes for one, so a request
    that fits a client stream can reach a component several times larger
    than the server then accepts back. Parsing it and writing it again
    without needless escapes gives the same XML infoset (namespace
    declarations and prefixes included, as they are copied as written;
    comments and processing instructions, which RFC 6120, 11.1 forbids
    in stanzas, are left out).

    @return: the compact stanza, or C{None} if it is not well-formed on
        its own (an undeclared entity, say).
    """
    out: list[str] = []
    pending = False  # a start tag is written but for its closing ">"

    def start(name: str, attributes: list[str]) -> None:
        nonlocal pending
        if pending:
            out.append(">")
        out.append("<" + name)
        out.extend(
            _attribute(attributes[i], attributes[i + 1])
            for i in range(0, len(attributes), 2)
        )
        pending = True

    def end(name: str) -> None:
        nonlocal pending
        if pending:
            out.append("/>")
            pending = False
        else:
            out.append("</%s>" % (name,))

    def text(data: str) -> None:
        nonlocal pending
        if pending:
            out.append(">")
            pending = False
        out.append(_escapeText(data))

    parser = ParserCreate()
    parser.ordered_attributes = True
    parser.buffer_text = True
    parser.buffer_size = 1 << 20
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(stanza, True)
    except ExpatError:
        return None
    return "".join(out).encode("utf-8")


class StanzaSplitter:
    """
    Splits a stream's bytes into stanzas, and hands IQs and presence to
    handlers.

    Expat runs without namespace processing and without building anything:
    its start and end events at depth 2 (the stanzas; depth 1 is the
    stream's root) give each stanza's position in the stream. The bytes of
    every stanza the IQ handler does not take, and everything between
    stanzas, go to C{passThrough} in order, so that the element parser
    behind it sees the same stream, less the stanzas taken. If expat finds
    the stream malformed, everything from that point on is passed through,
    and the element parser reports the error as it always does.

    @ivar onIQ: the L{IQHandler}, or C{None} to pass every IQ through.
    @ivar onPresence: the L{StanzaHandler} for presence, or C{None} to pass
        all presence through.
    """

    def __init__(self, passThrough: Callable[[bytes], None]) -> None:
        self.onIQ: IQHandler | None = None
        self.onPresence: StanzaHandler | None = None
        self._passThrough = passThrough
        self._parser = ParserCreate()
        self._parser.StartElementHandler = self._start
        self._parser.EndElementHandler = self._end
        self._buffer = bytearray()
        self._base = 0  # stream offset of the buffer's first byte
        self._forwarded = 0  # stream offset up to which bytes were handled
        self._depth = 0
        self._broken = False
        self._stanza: tuple[str, dict[str, str], int, int] | None = None
        #: Prefixes the stream's root declares: a stanza that may use one
        #: means something only in this stream, and is left to the element
        #: parser, which knows them.
        self._rootPrefixes: tuple[bytes, ...] = ()
        #: Whether the bytes passed through now are a stanza its handler
        #: declined (see L{FastXmlStream}).
        self.declining = False

    def feed(self, data: bytes) -> None:
        if self._broken:
            self._passThrough(data)
            return
        self._buffer += data
        try:
            self._parser.Parse(data)
        except ExpatError:
            self._broken = True
            self._passThrough(bytes(self._buffer[self._forwarded - self._base :]))
            self._buffer.clear()
            return
        keep = self._stanza[2] if self._stanza is not None else self._forwarded
        if keep > self._base:
            del self._buffer[: keep - self._base]
            self._base = keep

    def _tagEnd(self, start: int) -> int:
        """
        The stream offset just past the start tag that begins at C{start}.
        """
        match = _TAG.match(self._buffer, start - self._base)
        assert match is not None, "expat reported a start tag here"
        return match.end() + self._base

    def _forwardUpTo(self, offset: int) -> None:
        if offset > self._forwarded:
            self._passThrough(
                bytes(self._buffer[self._forwarded - self._base : offset - self._base])
            )
            self._forwarded = offset

    def _start(self, name: str, attributes: dict[str, str]) -> None:
        self._depth += 1
        if self._depth == 1:
            # The stream header goes through at once: the authenticator
            # waits for it before anything else is sent.
            self._rootPrefixes = tuple(
                name[6:].encode("utf-8") + b":"
                for name in attributes
                if name.startswith("xmlns:")
            )
            self._forwardUpTo(self._tagEnd(self._parser.CurrentByteIndex))
        elif self._depth == 2:
            start = self._parser.CurrentByteIndex
            self._forwardUpTo(start)
            self._stanza = (name, attributes, start, self._tagEnd(start))

    def _end(self, name: str) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._forwardUpTo(self._base + len(self._buffer))
        elif self._depth == 1:
            assert self._stanza is not None, "expat reported its start"
            name, attributes, start, tagEnd = self._stanza
            self._stanza = None
            if self._buffer[tagEnd - self._base - 2] == 0x2F:  # "/>": empty
                innerEnd = end = tagEnd
            else:
                innerEnd = self._parser.CurrentByteIndex
                end = self._buffer.index(b">", innerEnd - self._base) + 1 + self._base
            handler = (
                self.onIQ if name == "iq" else self.onPresence if name == "presence" else None
            )
            if handler is None or self._usesRootPrefix(start, end):
                self._forwardUpTo(end)
            elif handler(
                attributes,
                bytes(self._buffer[tagEnd - self._base : innerEnd - self._base]),
            ):
                self._forwarded = end
            else:
                self.declining = True
                try:
                    self._forwardUpTo(end)
                finally:
                    self.declining = False

    def _usesRootPrefix(self, start: int, end: int) -> bool:
        """
        Whether the stanza between stream offsets C{start} and C{end} may
        use a prefix the stream's root declares (its bytes hold one, even
        in text: then the element parser reads it, which is only slower).
        """
        start -= self._base
        end -= self._base
        for prefix in self._rootPrefixes:
            if self._buffer.find(prefix, start, end) != -1:
                return True
        return False


def elementAsIQ(element: domish.Element) -> tuple[dict[str, str], bytes]:
    """
    The attributes and inner XML of an IQ parsed as an element, as the
    fast path gives them.
    """
    attributes = {}
    for name, value in element.attributes.items():
        if isinstance(name, tuple):
            if name[0] != XML_NS:
                continue
            name = "xml:" + name[1]
        attributes[name] = value
    # Children in the stanza's own namespace are written without it, as
    # the fast path gives them: they take the default namespace of the
    # stream they are sent on.
    inner = "".join(
        child.toXml(defaultUri=element.uri)
        if domish.IElement.providedBy(child)
        else domish.escapeToXml(child)
        for child in element.children
    )
    return attributes, inner.encode("utf-8")


#: The priority of the observer through which an IQ router gets IQ
#: elements: after the handlers of the component's own (priority 0), which
#: mark what they take C{handled}, and before Wokkel's fallback (-1), which
#: answers what nobody took.
ROUTER_PRIORITY = -0.5


def routeIQs(xs: xmlstream.XmlStream, handler: IQHandler) -> None:
    """
    Hand the IQs that arrive on C{xs} to C{handler}, once each: as bytes
    on the fast path of a L{FastXmlStream}, else as elements, after the
    stream's other IQ handlers had their turn.
    """
    if isinstance(xs, FastXmlStream):
        xs.setIQHandler(handler)
    else:
        xs.addObserver("/iq", lambda element: _handOver(element, handler), ROUTER_PRIORITY)


def takePresence(xs: xmlstream.XmlStream, handler: StanzaHandler) -> None:
    """
    Offer the presence that arrives on C{xs} to C{handler} as bytes, on
    the fast path of a L{FastXmlStream}. What it declines, and all
    presence on any other stream, goes to the stream's observers as
    elements.
    """
    if isinstance(xs, FastXmlStream):
        xs.setPresenceHandler(handler)


def _handOver(element: domish.Element, handler: IQHandler) -> None:
    """
    Hand an IQ element that no other handler took to C{handler}, and mark
    it C{handled} if it takes it.
    """
    if not getattr(element, "handled", False) and handler(*elementAsIQ(element)):
        # The mark Twisted's and Wokkel's IQ handlers set and read.
        setattr(element, "handled", True)


class WriteAtOnce:
    """
    What is sent while a read is handled goes out when the read is done,
    straight to the socket, not on the reactor's next turn.

    A Twisted transport buffers what is written, registers itself with the
    reactor as a writer, and sends once the reactor's next poll finds the
    socket writable; then it unregisters. At low load that turn is all that
    stands between a forwarded stanza and the wire, and it costs about as
    much as routing the stanza: another poll, and two changes of the
    reactor's registrations. So the streams collect what they send while a
    read is handled (by any stream: in a pool, a request and its answer
    leave on the other connection), and each sends it at once when the
    read is done (L{FastXmlStream.flush}), in one piece, as the reactor
    would have.
    """

    def __init__(self) -> None:
        #: Reads being handled (one, unless a read leads to another).
        self.reading = 0
        self._collecting: list["FastXmlStream"] = []

    def readStarted(self) -> None:
        self.reading += 1

    def readDone(self) -> None:
        self.reading -= 1
        if self.reading or not self._collecting:
            return
        streams, self._collecting = self._collecting, []
        for stream in streams:
            stream.flush()

    def collecting(self, stream: "FastXmlStream") -> None:
        """
        C{stream} collects what it sends until the read is done.
        """
        self._collecting.append(stream)


class FastXmlStream(xmlstream.XmlStream):
    """
    An XML stream whose IQs can be taken as bytes by an L{IQHandler}.

    Until a handler is set with L{setIQHandler}, and for every stanza it
    declines, the stream behaves as a plain L{xmlstream.XmlStream}. An IQ
    the fast path does not read (one written unusually, such as with a
    namespace prefix, or one that may use a prefix declared on the stream's
    root) is handed to the handler from the element parser; one the
    handler declined is not handed to it again.

    What is sent while a read of any such stream is handled goes out when
    the read is done (L{WriteAtOnce}).
    """

    #: Shared by every stream of the process, as the reactor is.
    writeAtOnce = WriteAtOnce()
    #: What was sent during the read being handled, if anything.
    _out: list[bytes] | None = None

    def connectionMade(self) -> None:
        self._splitter = StanzaSplitter(self._parse)
        super().connectionMade()

    def setIQHandler(self, handler: IQHandler) -> None:
        self._splitter.onIQ = handler
        self.addObserver("/iq", lambda element: self._fromParser(element, handler), ROUTER_PRIORITY)

    def setPresenceHandler(self, handler: StanzaHandler) -> None:
        self._splitter.onPresence = handler

    def _fromParser(self, element: domish.Element, handler: IQHandler) -> None:
        if not self._splitter.declining:
            _handOver(element, handler)

    def dataReceived(self, data: bytes) -> None:
        if self.rawDataInFn:
            self.rawDataInFn(data)
        self.writeAtOnce.readStarted()
        try:
            self._splitter.feed(data)
        except domish.ParserError:
            self.dispatch(failure.Failure(), xmlstream.STREAM_ERROR_EVENT)
            if self.transport is not None:
                self.transport.loseConnection()
        finally:
            self.writeAtOnce.readDone()

    def send(self, obj: domish.Element | str | bytes) -> None:
        """
        Send C{obj} as L{xmlstream.XmlStream.send} does; while a read is
        handled, collect it for L{flush} instead, if the transport is a
        socket's (a L{FileDescriptor}: TCP or Unix, not TLS, which has a
        transport of its own around the socket's).
        """
        if not self.writeAtOnce.reading or not isinstance(self.transport, FileDescriptor):
            super().send(obj)
            return
        # Bytes, from the fast path, are asked about first: an interface
        # check costs more than the rest of this method.
        if not isinstance(obj, bytes):
            if domish.IElement.providedBy(obj):
                obj = obj.toXml()  # type: ignore[union-attr]
            if isinstance(obj, str):
                obj = obj.encode("utf-8")
        if self.rawDataOutFn:
            self.rawDataOutFn(obj)
        if self._out is None:
            self._out = []
            self.writeAtOnce.collecting(self)
        self._out.append(obj)

    def flush(self) -> None:
        """
        Send what was collected during a read: to the socket at once when
        the transport has nothing else to send, and what the socket does not
        take (or all of it, otherwise) through the transport, which sends it
        on the reactor's next turns.

        Why writing to the socket is safe: the transport has nothing
        buffered exactly when it is not registered as a writer (it
        registers with its first byte buffered and unregisters once it has
        sent its last), so nothing can overtake what it holds; the reactor
        runs in this thread alone, so that cannot change in between. The
        transport's own C{writeSomeData} is what its C{doWrite} calls on the
        reactor's turn: it sends what the socket takes now (C{0} bytes if
        it takes none) or returns the error of a lost connection. On an
        error nothing is sent; the bytes go to the transport, whose next
        C{doWrite} meets the same error and ends the connection as it
        always does. A transport that is disconnecting, or disconnected,
        is given everything, as it would have been.
        """
        data = b"".join(self._out or ())
        self._out = None
        transport = self.transport
        if (
            isinstance(transport, FileDescriptor)
            and transport.connected
            and not transport.disconnecting
            and transport not in transport.reactor.getWriters()
        ):
            sent = transport.writeSomeData(data)
            if isinstance(sent, int):
                data = data[sent:]
        if data and transport is not None:
            transport.write(data)

    def _parse(self, data: bytes) -> None:
        self.stream.parse(data)
