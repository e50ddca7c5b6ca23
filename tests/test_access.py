"""
Who may use a proxy: allow and deny lists.
"""

from hypothesis import given
from hypothesis import strategies as st

from client_proxy.access import AccessPolicy

TARGET = "service@example.org"


def test_everyone_by_default():
    policy = AccessPolicy(TARGET)
    assert policy.allows("anyone@anywhere.example/r")
    assert policy.allows("anywhere.example")


def test_allow_list_names_jids_and_domains():
    policy = AccessPolicy(TARGET, allow=["friend@a.example", "b.example"])
    assert policy.allows("friend@a.example/phone")
    assert not policy.allows("stranger@a.example/phone")
    assert policy.allows("anyone@b.example/x")
    assert policy.allows("b.example")
    assert not policy.allows("anyone@sub.b.example/x")


def test_deny_wins_over_allow():
    policy = AccessPolicy(TARGET, allow=["a.example"], deny=["evil@a.example"])
    assert policy.allows("good@a.example/r")
    assert not policy.allows("evil@a.example/r")


def test_deny_a_domain():
    policy = AccessPolicy(TARGET, deny=["evil.example"])
    assert not policy.allows("x@evil.example/r")
    assert policy.allows("x@good.example/r")


def test_target_always_allowed():
    policy = AccessPolicy(TARGET, allow=["a.example"], deny=["example.org", TARGET])
    assert policy.allows(TARGET + "/worker")
    assert not policy.allows("other@example.org/r")


_label = st.text("abcxyz", min_size=1, max_size=4)
_jid = st.builds(lambda u, d: u + "@" + d + ".example", _label, _label)


@given(_jid, st.lists(_jid | _label.map(lambda d: d + ".example")))
def test_denied_whatever_is_allowed(sender, allowed):
    """A sender on the deny list is refused, whatever the allow list says."""
    policy = AccessPolicy(TARGET, allow=allowed + [sender], deny=[sender])
    assert not policy.allows(sender + "/r")
