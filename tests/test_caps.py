"""
Entity capabilities (XEP-0115): the verification string against the
specification's worked examples, the checks of an answer, and the
namespace of a request's payload.
"""

import base64
import hashlib
from pyexpat import ExpatError, ParserCreate

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from client_proxy.caps import (
    Caps,
    IllFormed,
    infoQuery,
    parseInfo,
    verification,
    verificationString,
)
from client_proxy.features import payloadNamespace

#: XEP-0115, 5.2: the simple generation example.
SIMPLE = b"""<query xmlns='http://jabber.org/protocol/disco#info'
         node='http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0='>
    <identity category='client' name='Exodus 0.9.1' type='pc'/>
    <feature var='http://jabber.org/protocol/caps'/>
    <feature var='http://jabber.org/protocol/disco#info'/>
    <feature var='http://jabber.org/protocol/disco#items'/>
    <feature var='http://jabber.org/protocol/muc'/>
  </query>"""

#: XEP-0115, 5.3: the complex generation example, with identities in two
#: languages and an extended information form (XEP-0128).
COMPLEX = """<query xmlns='http://jabber.org/protocol/disco#info'
         node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>
    <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
    <identity xml:lang='el' category='client' name='&#936; 0.11' type='pc'/>
    <feature var='http://jabber.org/protocol/caps'/>
    <feature var='http://jabber.org/protocol/disco#info'/>
    <feature var='http://jabber.org/protocol/disco#items'/>
    <feature var='http://jabber.org/protocol/muc'/>
    <x xmlns='jabber:x:data' type='result'>
      <field var='FORM_TYPE' type='hidden'>
        <value>urn:xmpp:dataforms:softwareinfo</value>
      </field>
      <field var='ip_version'>
        <value>ipv4</value>
        <value>ipv6</value>
      </field>
      <field var='os'>
        <value>Mac</value>
      </field>
      <field var='os_version'>
        <value>10.5.1</value>
      </field>
      <field var='software'>
        <value>Psi</value>
      </field>
      <field var='software_version'>
        <value>0.11</value>
      </field>
    </x>
  </query>""".encode("utf-8")


def test_the_simple_example():
    info = parseInfo(SIMPLE)
    assert verificationString(info) == (
        "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<"
        "http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<"
        "http://jabber.org/protocol/muc<"
    )
    assert verification(info, "sha-1") == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_the_complex_example():
    info = parseInfo(COMPLEX)
    assert verificationString(info) == (
        "client/pc/el/\u03a8 0.11<client/pc/en/Psi 0.11<http://jabber.org/protocol/caps<"
        "http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<"
        "http://jabber.org/protocol/muc<urn:xmpp:dataforms:softwareinfo<"
        "ip_version<ipv4<ipv6<os<Mac<os_version<10.5.1<software<Psi<software_version<0.11<"
    )
    assert verification(info, "sha-1") == "q07IKJEyjvHSyhy//CH0CxmKi8w="


def test_order_does_not_matter():
    """The parts are sorted: the same answer written in another order."""
    reordered = SIMPLE.replace(
        b"<feature var='http://jabber.org/protocol/caps'/>", b""
    ).replace(b"</query>", b"<feature var='http://jabber.org/protocol/caps'/></query>")
    assert verification(parseInfo(reordered), "sha-1") == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_other_hash_functions():
    info = parseInfo(SIMPLE)
    S = verificationString(info).encode("utf-8")
    assert verification(info, "sha-256") == base64.b64encode(hashlib.sha256(S).digest()).decode()


def test_a_form_without_a_hidden_form_type_is_ignored():
    unhidden = COMPLEX.replace(b"var='FORM_TYPE' type='hidden'", b"var='FORM_TYPE'")
    assert verificationString(parseInfo(unhidden)).endswith("http://jabber.org/protocol/muc<")


@pytest.mark.parametrize(
    "change",
    [
        (b"<feature var='http://jabber.org/protocol/muc'/>",
         b"<feature var='http://jabber.org/protocol/muc'/>" * 2),
        (b"<identity category='client' name='Exodus 0.9.1' type='pc'/>",
         b"<identity category='client' name='Exodus 0.9.1' type='pc'/>" * 2),
    ],
)
def test_repeats_are_ill_formed(change):
    with pytest.raises(IllFormed):
        verification(parseInfo(SIMPLE.replace(*change)), "sha-1")


def test_a_repeated_form_type_is_ill_formed():
    form = COMPLEX[COMPLEX.index(b"<x "): COMPLEX.index(b"</x>") + 4]
    with pytest.raises(IllFormed):
        verification(parseInfo(COMPLEX.replace(form, form * 2)), "sha-1")


def test_a_form_type_with_two_values_is_ill_formed():
    two = COMPLEX.replace(
        b"<value>urn:xmpp:dataforms:softwareinfo</value>",
        b"<value>urn:xmpp:dataforms:softwareinfo</value><value>urn:other</value>",
    )
    with pytest.raises(IllFormed):
        verification(parseInfo(two), "sha-1")


@pytest.mark.parametrize(
    "inner",
    [b"", b"<other xmlns='urn:x'/>", b"<query xmlns='http://jabber.org/protocol/disco#info'>",
     SIMPLE + SIMPLE],
)
def test_not_an_answer(inner):
    with pytest.raises(IllFormed):
        parseInfo(inner)


def test_the_lt_warning():
    """
    XEP-0115, 5.1: "&lt;" in a name is the four characters, never a "<"
    that would let one answer pass for another.
    """
    tricky = SIMPLE.replace(b"Exodus 0.9.1", b"Exodus&amp;lt;0.9.1")
    assert "Exodus&lt;0.9.1<" in verificationString(parseInfo(tricky))


def test_the_query():
    assert infoQuery("http://x.example/n#a'b") == (
        b"<query xmlns='http://jabber.org/protocol/disco#info' node='http://x.example/n#a&apos;b'/>"
    )


def test_caps():
    caps = Caps("sha-1", "http://x", "abc=")
    assert caps.key == ("sha-1", "abc=") and caps.verifiable
    assert not Caps("md5", "http://x", "abc=").verifiable


@pytest.mark.parametrize(
    "inner, namespace",
    [
        (b"<query xmlns='urn:a'/>", "urn:a"),
        (b"  \n<query id='1' xmlns=\"urn:a\">text</query>", "urn:a"),
        (b"<query a='b xmlns=\"urn:evil\"' xmlns='urn:a'/>", "urn:a"),
        (b"<query xmlns:p='urn:p' xmlns='urn:a'><p:x/></query>", "urn:a"),
        (b"<p:query xmlns:p='urn:p'/>", "urn:p"),
        (b"<query xmlns='urn:a&amp;b'/>", "urn:a&b"),
        (b"<query/>", ""),
        (b"<i/>", ""),
        (b"<i><j xmlns='urn:j'/></i>", ""),
        (b"", ""),
        (b"just text", ""),
        (b"<!-- a comment --><query xmlns='urn:a'/>", "urn:a"),
        (b"<query xmlns='urn:a'/></iq>", "urn:a"),
        (b"<p:query xmlns:p='urn:p'/></iq>", "urn:p"),
    ],
)
def test_payload_namespace(inner, namespace):
    assert payloadNamespace(inner) == namespace


names = st.text(st.sampled_from("abcxyz"), min_size=1, max_size=5)
values = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\t\n\r&<'\""),
                 max_size=10)


def expat_namespace(data):
    """The namespace of the first element of C{data}, as expat reads it."""
    found = []
    parser = ParserCreate(namespace_separator=" ")
    parser.StartElementHandler = lambda name, attributes: found.append(name.rpartition(" ")[0])
    parser.Parse(data, True)
    return found[0]


@given(
    name=names,
    namespace=values,
    prefix=st.none() | names,
    attributes=st.lists(st.tuples(names.map(lambda n: "a" + n), values), max_size=3),
    quote=st.sampled_from("'\""),
    space=st.sampled_from([" ", "\n ", "\t"]),
)
def test_payload_namespace_agrees_with_expat(name, namespace, prefix, attributes, quote, space):
    """
    However the first child is written, the quick reading gives what a
    namespace-aware parser reads.
    """

    def attribute(key, value):
        escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace(
            quote, "&quot;" if quote == '"' else "&apos;"
        )
        return "%s%s=%s%s%s" % (space, key, quote, escaped, quote)

    if prefix is not None and not namespace:
        return  # an empty prefixed declaration is not XML 1.0
    tag = name if prefix is None else "%s:%s" % (prefix, name)
    declaration = "xmlns" if prefix is None else "xmlns:" + prefix
    written = "<%s%s%s/>" % (
        tag,
        "".join(attribute(k, v) for k, v in dict(attributes).items()),
        attribute(declaration, namespace),
    )
    data = written.encode("utf-8")
    try:
        expected = expat_namespace(data)
    except ExpatError:
        assume(False)  # not XML that a server passes on (a space in a namespace)
    assert payloadNamespace(data) == expected
