"""
Entity capabilities (XEP-0115) and the service discovery answers they
stand for (XEP-0030, XEP-0128): pure functions, free of I/O.

A resource announces its capabilities in its presence with a C{<c/>}
element whose C{ver} is a hash of its disco#info (identities, features and
extended forms, XEP-0115, 5.1). The component asks one resource for the
disco#info of a C{ver} it does not know, checks that the answer hashes to
that C{ver}, and then knows the features of every resource that announces
it (L{client_proxy.features.CapsDiscovery}).

Written here rather than with C{wokkel.disco}, which does not import on
current Twisted.
"""

import base64
import hashlib
from pyexpat import ExpatError, ParserCreate
from typing import NamedTuple

from client_proxy.fastpath import escape

CAPS_NS = "http://jabber.org/protocol/caps"
DISCO_INFO_NS = "http://jabber.org/protocol/disco#info"
DATA_FORMS_NS = "jabber:x:data"
_XML_LANG = "http://www.w3.org/XML/1998/namespace lang"

#: The hash functions of XEP-0115's C{hash} attribute that the component
#: verifies, by their names in the IANA registry of hash function textual
#: names, with their names in L{hashlib}. SHA-1 is mandatory to implement
#: (XEP-0115, 8.1); a C{ver} of another function is treated as no caps.
HASHES = {
    "sha-1": "sha1",
    "sha-224": "sha224",
    "sha-256": "sha256",
    "sha-384": "sha384",
    "sha-512": "sha512",
}


class Caps(NamedTuple):
    """
    The C{<c xmlns='http://jabber.org/protocol/caps'/>} of a presence.
    """

    hash: str
    node: str
    ver: str

    @property
    def key(self) -> tuple[str, str]:
        """
        What the features are known by: the same C{ver} with the same hash
        function stands for the same disco#info, whatever the C{node}
        (XEP-0115, 6.2).
        """
        return self.hash, self.ver

    @property
    def verifiable(self) -> bool:
        """
        Whether the component can check the C{ver} (a hash function it
        knows).
        """
        return self.hash in HASHES


class Identity(NamedTuple):
    category: str
    type: str
    lang: str
    name: str


class Field(NamedTuple):
    """
    A field of a data form (XEP-0004): its C{var}, C{type} and values.
    """

    var: str
    type: str
    values: list[str]


class DiscoInfo(NamedTuple):
    """
    A disco#info answer, as XEP-0115, 5.1 reads it: identities, features,
    and the extended information forms (XEP-0128), each as its fields.
    """

    identities: list[Identity]
    features: list[str]
    forms: list[list[Field]]


class IllFormed(ValueError):
    """
    A disco#info answer that XEP-0115, 5.4 says to consider ill-formed.
    """


def infoQuery(node: str) -> bytes:
    """
    The payload of a disco#info request for C{node} (the caps C{node}, a
    C{#} and the C{ver}: XEP-0115, 6.2).
    """
    return ("<query xmlns='%s' node='%s'/>" % (DISCO_INFO_NS, escape(node))).encode("utf-8")


_QUERY = DISCO_INFO_NS + " query"
_IDENTITY = DISCO_INFO_NS + " identity"
_FEATURE = DISCO_INFO_NS + " feature"
_FORM = DATA_FORMS_NS + " x"
_FIELD = DATA_FORMS_NS + " field"
_VALUE = DATA_FORMS_NS + " value"


def parseInfo(inner: bytes) -> DiscoInfo:
    """
    Read the disco#info C{<query/>} in C{inner}, the payload of an IQ
    result: its identities, features and forms, in the order written.

    @raise IllFormed: there is no such query, or C{inner} is not
        well-formed XML.
    """
    info = DiscoInfo([], [], [])
    path: list[str] = []
    text: list[str] = []
    queries = 0

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal queries
        path.append(name)
        if path[1:] == [_QUERY]:
            queries += 1
        elif path[1:] == [_QUERY, _IDENTITY]:
            info.identities.append(
                Identity(
                    attributes.get("category", ""),
                    attributes.get("type", ""),
                    attributes.get(_XML_LANG, ""),
                    attributes.get("name", ""),
                )
            )
        elif path[1:] == [_QUERY, _FEATURE]:
            info.features.append(attributes.get("var", ""))
        elif path[1:] == [_QUERY, _FORM]:
            info.forms.append([])
        elif path[1:] == [_QUERY, _FORM, _FIELD]:
            info.forms[-1].append(
                Field(attributes.get("var", ""), attributes.get("type", ""), [])
            )
        elif path[1:] == [_QUERY, _FORM, _FIELD, _VALUE]:
            text.clear()

    def end(name: str) -> None:
        if path[1:] == [_QUERY, _FORM, _FIELD, _VALUE]:
            info.forms[-1][-1].values.append("".join(text))
        path.pop()

    parser = ParserCreate(namespace_separator=" ")
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    try:
        parser.Parse(b"<i>" + inner + b"</i>", True)
    except ExpatError as e:
        raise IllFormed("not well-formed XML: %s" % (e,))
    if queries != 1:
        raise IllFormed("%d disco#info queries, not one" % (queries,))
    return info


def verificationString(info: DiscoInfo) -> str:
    """
    The string S of XEP-0115, 5.1 that a C{ver} is the hash of: the
    identities, the features and the extended forms, each sorted
    ("i;octet": code point order, the order of their UTF-8 bytes), each
    part followed by C{<}.

    @raise IllFormed: the answer repeats an identity, a feature or a form
        (XEP-0115, 5.4, 3.3 to 3.5).
    """
    identities = sorted(info.identities)
    features = sorted(info.features)
    if len(set(identities)) < len(identities):
        raise IllFormed("an identity is repeated")
    if len(set(features)) < len(features):
        raise IllFormed("a feature is repeated")
    parts = ["%s/%s/%s/%s" % identity for identity in identities]
    parts.extend(features)
    typed = sorted(_typedForms(info.forms), key=lambda form: form[0])
    if len({formType for formType, fields in typed}) < len(typed):
        raise IllFormed("a FORM_TYPE is repeated")
    for formType, fields in typed:
        parts.append(formType)
        for field in sorted(fields, key=lambda field: field.var):
            if field.var != "FORM_TYPE":
                parts.append(field.var)
                parts.extend(sorted(field.values))
    return "".join(part + "<" for part in parts)


def _typedForms(forms: list[list[Field]]) -> list[tuple[str, list[Field]]]:
    """
    The forms that count (XEP-0115, 5.4, 3.6), with their FORM_TYPE: those
    whose FORM_TYPE field is hidden; the others are ignored.

    @raise IllFormed: a FORM_TYPE field with different values.
    """
    typed = []
    for fields in forms:
        formType = [field for field in fields if field.var == "FORM_TYPE"]
        if len(formType) != 1 or formType[0].type != "hidden" or not formType[0].values:
            continue
        values = set(formType[0].values)
        if len(values) > 1:
            raise IllFormed("a FORM_TYPE has different values")
        typed.append((values.pop(), fields))
    return typed


def verification(info: DiscoInfo, hash: str) -> str:
    """
    The C{ver} of C{info} with the hash function C{hash} (one of
    L{HASHES}): the Base64 of the hash of its verification string, in
    UTF-8 (XEP-0115, 5.1, 8 and 9).

    @raise IllFormed: as L{verificationString}.
    """
    digest = hashlib.new(HASHES[hash], verificationString(info).encode("utf-8")).digest()
    return base64.b64encode(digest).decode("ascii")
