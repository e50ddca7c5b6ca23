"""
The fast path and the element (domish) path route every IQ to the same
stanzas: the router behaves the same on the project's own stream and on
any Wokkel component's.
"""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.words.xish import domish
from xml.sax.saxutils import escape, quoteattr

from client_proxy.inflight import RequestTable
from client_proxy.presence import Resources
from client_proxy.router import IQRouter
from client_proxy.routing import Routing
from tests.test_router import COMPONENT, R1, TARGET, FirstStrategy, Stream

# Tab, LF and CR are left out: Twisted's serializer (domish) writes them
# raw, in attribute values and (CR) in text, so on the element path they
# arrive as spaces and LFs, as XML 1.0 (3.3.3, 2.11) normalizes them. Through
# Prosody, which writes them raw itself (see FACTS), both paths see the
# same.
_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"))
    | st.sampled_from("\"'<>&"),
    max_size=12,
)
_name = st.text("abcxyz", min_size=1, max_size=5)
_resource = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")) | st.sampled_from("\"'&<>/@"),
    min_size=1,
    max_size=10,
).filter(lambda r: r.strip() == r)


@st.composite
def payloads(draw, depth=2):
    """
    An element: in a namespace of its own, with or without a prefix
    declared on it, or in the stanza's (the stream's default namespace).
    """
    name = draw(_name)
    uri = "urn:" + draw(_name)
    prefix = draw(st.none() | _name)
    tag = name if prefix is None else prefix + ":" + name
    declaration = "xmlns" if prefix is None else "xmlns:" + prefix
    inherit = prefix is None and draw(st.booleans())
    attributes = "".join(
        " %s=%s" % (key, quoteattr(value)) for key, value in draw(st.dictionaries(_name, _text, max_size=2)).items()
    )
    children = ""
    if depth:
        children = "".join(draw(st.lists(payloads(depth - 1), max_size=2)))
    text = escape(draw(_text))
    if draw(st.booleans()):
        text = text.replace("&amp;", "&#38;")  # a character reference
    namespace = "" if inherit else " %s=%s" % (declaration, quoteattr(uri))
    return "<%s%s%s>%s%s</%s>" % (tag, namespace, attributes, text, children, tag)


def routed(fast, stanzas):
    stub = Stream(fast=fast)
    resources = Resources()
    resources.available(R1)
    clock = Clock()
    table = RequestTable(timeout=30, maxPerRequester=100, maxTotal=100)
    router = IQRouter(
        Routing(COMPONENT, TARGET, resources, FirstStrategy(resources), clock=clock), table, clock
    )
    stub.connect(router)
    for stanza in stanzas:
        stub.xmlstream.dataReceived(stanza.encode("utf-8"))
    # Read as the next stream reads them: in another default namespace, so
    # that an element written in the component's namespace stands out.
    parsed = []
    stream = domish.elementStream()
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = parsed.append
    stream.parse(b"<stream xmlns='jabber:client'>" + b"".join(stub.sent))
    return [element.toXml() for element in parsed]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    type=st.sampled_from(["get", "set"]),
    requester=st.builds(lambda u, r: u + "@example.org/" + r, _name, _resource),
    id=_text,
    payload=payloads(),
    answer=payloads(),
)
def test_both_paths_send_the_same_stanzas(type, requester, id, payload, answer):
    request = "<iq type=%s id=%s from=%s to=%s>%s</iq>" % (
        quoteattr(type), quoteattr(id), quoteattr(requester), quoteattr(COMPONENT), payload
    )
    response = "<iq type='result' id=%s from=%s to=%s>%s</iq>" % (
        quoteattr(id), quoteattr(R1), quoteattr(COMPONENT + "/" + requester), answer
    )
    fast = routed(True, [request, response])
    assert fast == routed(False, [request, response])
    assert fast, "the request was forwarded, or refused"
