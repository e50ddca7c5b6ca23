"""
Jabber Address Translation (JAT): pure functions, no I/O.

A request from C{user@example.org/abc} to the component C{proxy.example.org}
reaches the implementing client as coming from
C{proxy.example.org/user@example.org/abc}: the requester's full JID becomes
the resource of the component's address. This is the encoding of Prosody's
mod_client_proxy, so implementing clients written for it keep working and can
read who asked. Answers addressed to such a JID are translated back.

Addresses are handled as strings, exactly as the server wrote them: the
server has already applied stringprep to every address it routes (RFC 6120,
section 8.1.1), and a string round trip is cheaper than building
L{twisted.words.protocols.jabber.jid.JID} objects for every stanza.
"""

from functools import lru_cache

from twisted.words.protocols.jabber.jid import JID
from twisted.words.protocols.jabber.xmpp_stringprep import resourceprep

#: RFC 7622, section 3.4: a resourcepart is at most 1023 bytes.
MAX_RESOURCE_BYTES = 1023


class JATError(ValueError):
    """
    The requester's address cannot be carried in a resource.
    """


def bare(address: str) -> str:
    """
    The bare JID of C{address}: everything before the first C{/}.

    RFC 7622, section 3.1: the resourcepart starts at the first slash, and
    may itself contain slashes.
    """
    return address.partition("/")[0]


def domain(address: str) -> str:
    """
    The domainpart of C{address}.
    """
    return bare(address).rpartition("@")[2]


def bareAndDomain(address: str) -> tuple[str, str]:
    """
    The bare JID of C{address} and its domainpart, read once.
    """
    jid = bare(address)
    return jid, jid.rpartition("@")[2]


def isValidJID(address: str) -> bool:
    """
    Whether C{address} is a JID that stringprep leaves as it is, so that
    the server routes it to the entity it names.
    """
    try:
        return JID(address).full() == address
    except Exception:
        # InvalidFormat, and IndexError from Twisted's nameprep for an
        # empty label in a domain (a..b).
        return False


@lru_cache(maxsize=4096)
def _check_encodable(requester: str) -> None:
    """
    Raise L{JATError} unless C{requester} can be carried in a resourcepart.

    Only what cannot be carried back is refused: a string resourceprep
    (RFC 6122, appendix B) rejects, though its parts are valid on their own
    (a Latin domain next to a right-to-left resource fails its bidi rule,
    for one), or one too long. Cached, since the same requesters ask again
    and again.
    """
    if not requester:
        raise JATError("the request carries no sender address")
    if len(requester.encode("utf-8")) > MAX_RESOURCE_BYTES:
        raise JATError(
            "the sender address is longer than the %d bytes a resource can "
            "carry" % (MAX_RESOURCE_BYTES,)
        )
    try:
        resourceprep.prepare(requester)
    except Exception as e:
        raise JATError("the sender address is not a valid resource: %s" % (e,))
    # What resourceprep would change (a compatibility character such as
    # U+FB01, which the older profile maps to "fi") is accepted as it is: a
    # server that routes it byte-exact (ejabberd) carries the answer back
    # to it, and one that does not never let such a requester connect.


def encode(component: str, requester: str) -> str:
    """
    Translate C{requester} into an address at C{component}.

    A requester written in printable ASCII, short enough, is carried
    without asking stringprep: resourceprep (RFC 3920, appendix B) maps,
    prohibits and checks the direction of characters outside ASCII only,
    but for the control characters, which printable ASCII has none of. So
    the cost does not grow once more requesters ask than the cache of
    L{_check_encodable} holds.

    @param component: the component's bare JID, e.g. C{proxy.example.org}.
    @param requester: the full JID of the entity that sent the request.
    @raise JATError: when C{requester} cannot be carried in a resource.
    """
    if not (
        requester.isascii()
        and requester.isprintable()
        and 0 < len(requester) <= MAX_RESOURCE_BYTES
    ):
        _check_encodable(requester)
    return component + "/" + requester


def decode(component: str, address: str) -> str | None:
    """
    Translate an address made by L{encode} back to the requester's JID.

    @return: the requester's JID, or C{None} when C{address} is not an
        address at C{component} with a resource.
    """
    prefix = component + "/"
    if address.startswith(prefix) and len(address) > len(prefix):
        return address[len(prefix):]
    return None
