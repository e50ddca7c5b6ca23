"""
Jabber Address Translation: encoding and decoding requester addresses.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.words.protocols.jabber.xmpp_stringprep import resourceprep

from client_proxy import jat

COMPONENT = "proxy.example.org"


@pytest.mark.parametrize(
    "requester",
    [
        "user@example.org/abc",
        "user@example.org/with/slashes/in/it",
        "user@example.org/an@sign",
        "user@example.org/with spaces inside",
        "user@example.org/Ünïcødé ☃",
        "example.org/a server resource",
        "user@example.org",
    ],
)
def test_round_trip(requester):
    encoded = jat.encode(COMPONENT, requester)
    assert encoded == COMPONENT + "/" + requester
    assert jat.decode(COMPONENT, encoded) == requester


def test_the_seed_exchange_encoding():
    """
    mod_client_proxy's encoding: the requester's full JID as the resource.
    """
    assert (
        jat.encode("proxy.domain.example", "user@some-domain.example/abc")
        == "proxy.domain.example/user@some-domain.example/abc"
    )


def test_too_long_for_a_resource():
    requester = "user@example.org/" + "x" * 1010
    with pytest.raises(jat.JATError, match="1023 bytes"):
        jat.encode(COMPONENT, requester)


def test_longest_that_fits():
    requester = "user@example.org/" + "x" * (1023 - len("user@example.org/"))
    assert jat.decode(COMPONENT, jat.encode(COMPONENT, requester)) == requester


def test_bytes_not_characters_count():
    requester = "user@example.org/" + "é" * 510
    with pytest.raises(jat.JATError):
        jat.encode(COMPONENT, requester)


def test_bidi_rule_breaks_the_encoding():
    """
    A right-to-left resource is valid alone but not behind a Latin domain:
    resourceprep's bidi rule rejects the whole string.
    """
    with pytest.raises(jat.JATError, match="not a valid resource"):
        jat.encode(COMPONENT, "user@example.org/שלום")


@given(st.text(st.characters(max_codepoint=127), max_size=40))
def test_ascii_is_carried_exactly_when_resourceprep_takes_it(requester):
    """
    A requester in ASCII, which skips stringprep when it is printable, is
    carried exactly when resourceprep accepts it (and it is not empty).
    """
    try:
        resourceprep.prepare(requester)
        valid = requester != ""
    except Exception:
        valid = False
    try:
        jat.encode(COMPONENT, requester)
        carried = True
    except jat.JATError:
        carried = False
    assert carried == valid


def test_no_sender():
    with pytest.raises(jat.JATError):
        jat.encode(COMPONENT, "")


@pytest.mark.parametrize(
    "address",
    [
        "proxy.example.org",
        "proxy.example.org/",
        "other.example.org/user@example.org/abc",
        "proxy.example.org.evil/user@example.org/abc",
        "user@proxy.example.org/x",
    ],
)
def test_decode_refuses_other_addresses(address):
    assert jat.decode(COMPONENT, address) is None


def test_bare_and_domain():
    assert jat.bare("a@b/c/d") == "a@b"
    assert jat.bare("a@b") == "a@b"
    assert jat.domain("a@b/c@d") == "b"
    assert jat.domain("b/c") == "b"
    assert jat.bareAndDomain("a@b/c@d") == ("a@b", "b")


@given(st.text(alphabet="ab@/", max_size=12))
def test_bare_and_domain_read_once_agree(address):
    # The tables count a requester by both, read in one go.
    assert jat.bareAndDomain(address) == (jat.bare(address), jat.domain(address))
    assert jat.domain(address) == jat.bare(address).rpartition("@")[2]


@pytest.mark.parametrize("address", ["alice@a..b", "alice@.b", "", "a b@c", "x@example.org/"])
def test_is_valid_jid_never_raises(address):
    assert jat.isValidJID(address) is False


def test_is_valid_jid():
    assert jat.isValidJID("alice@example.org/phone")
    assert not jat.isValidJID("Alice@example.org"), "stringprep would change it"
