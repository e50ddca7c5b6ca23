"""
The component as a contact: its subscribers and its presence, with a stub
stream.
"""

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel.test.helpers import XmlStreamStub

from client_proxy import config
from client_proxy.access import AccessPolicy
from client_proxy.contacts import (
    ComponentPresenceHandler,
    DomainRate,
    SubscriberLimits,
)
from client_proxy.presence import Resources, TargetPresenceHandler
from client_proxy.store import MemorySubscriberStore, SQLiteSubscriberStore

COMPONENT = "proxy.example.org"
TARGET = "service@example.org"
ALICE = "alice@example.org"
CAROL = "carol@example.org"
BOB = "bob@example.net"


def presence(sender, type=None, to=COMPONENT):
    element = domish.Element(("jabber:component:accept", "presence"))
    element["from"] = sender
    element["to"] = to
    if type:
        element["type"] = type
    return element


def sent(stub):
    """
    The presence sent, as (type, to, from) with type None for available;
    the output is emptied.
    """
    out = [
        (s.getAttribute("type"), s.getAttribute("to"), s.getAttribute("from"))
        for s in stub.output
        if s.name == "presence"
    ]
    stub.output.clear()
    return out


def available(to):
    return (None, to, COMPONENT)


def unavailable(to):
    return ("unavailable", to, COMPONENT)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def resources():
    return Resources()


@pytest.fixture
def subscribers():
    return MemorySubscriberStore()


@pytest.fixture
def stub():
    return XmlStreamStub()


@pytest.fixture
def handler(stub, resources, subscribers, clock):
    handler = ComponentPresenceHandler(
        JID(COMPONENT), JID(TARGET), resources, subscribers, clock
    )
    handler.parent = stub.xmlstream  # what the stream manager's send reaches
    handler.makeConnection(stub.xmlstream)
    handler.connectionInitialized()
    return handler


# Configuration


def build(**settings):
    return config.build("proxy.example.org", TARGET, secret="s", environ={}, **settings)


def test_config_state_file(tmp_path):
    assert build().stateFile is None
    assert build(stateFile=":memory:").stateFile is None
    path = tmp_path / "state.db"
    assert build(stateFile=str(path)).stateFile == str(path)
    assert not path.exists(), "checked by its folder's permissions, created at start-up"
    env = {"CLIENT_PROXY_JID": COMPONENT, "CLIENT_PROXY_TARGET": TARGET,
           "CLIENT_PROXY_SECRET": "s", "CLIENT_PROXY_STATE_FILE": str(path)}
    assert config.fromEnvironment(env).stateFile == str(path)


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing/state.db", "cannot be created: the directory %s/missing does not exist"),
        ("", "is a directory, not a file"),
    ],
)
def test_config_state_file_errors(tmp_path, name, message):
    with pytest.raises(config.ConfigError) as caught:
        build(stateFile=str(tmp_path / name) if name else str(tmp_path))
    assert str(caught.value).startswith("the state file ")
    assert (message % (tmp_path,) if "%s" in message else message) in str(caught.value)
    assert caught.value.key == "stateFile"


# Subscriptions


def test_subscribe_is_approved_with_the_current_presence(stub, handler, subscribers, resources):
    stub.send(presence(ALICE + "/phone", "subscribe"))
    assert sent(stub) == [("subscribed", ALICE, COMPONENT), unavailable(ALICE)]
    assert list(subscribers) == [ALICE]
    resources.available(TARGET + "/a")
    sent(stub)
    stub.send(presence(BOB, "subscribe"))
    assert sent(stub) == [("subscribed", BOB, COMPONENT), available(BOB)]
    stub.send(presence(BOB, "subscribe"))
    assert sent(stub) == [("subscribed", BOB, COMPONENT), available(BOB)], "approved again"
    assert list(subscribers) == [ALICE, BOB]


def test_unsubscribe(stub, handler, subscribers):
    subscribers.add(ALICE)
    stub.send(presence(ALICE + "/phone", "unsubscribe"))
    assert sent(stub) == [unavailable(ALICE), ("unsubscribed", ALICE, COMPONENT)]
    assert list(subscribers) == []


@pytest.mark.parametrize("type", ["unsubscribed", "subscribed", None, "unavailable", "error"])
def test_ignored(stub, handler, subscribers, type):
    """
    Presence about the user's own presence, and errors, get no answer.
    """
    subscribers.add(ALICE)
    stub.send(presence(ALICE + "/phone", type))
    assert sent(stub) == []
    assert list(subscribers) == [ALICE]


def test_probe_from_a_subscriber(stub, handler, subscribers, resources):
    subscribers.add(ALICE)
    stub.send(presence(ALICE, "probe"))
    assert sent(stub) == [unavailable(ALICE)]
    resources.available(TARGET + "/a")
    sent(stub)
    stub.send(presence(ALICE, "probe"))
    assert sent(stub) == [available(ALICE)]


def test_probe_from_anyone_else(stub, handler, resources):
    resources.available(TARGET + "/a")
    stub.send(presence(BOB + "/x", "probe"))
    assert sent(stub) == [("unsubscribed", BOB, COMPONENT)]


def test_presence_to_other_addresses_is_not_ours(stub, handler, subscribers):
    stub.send(presence(ALICE, "subscribe", to="someone@" + COMPONENT))
    stub.send(presence(ALICE, "probe", to="someone@" + COMPONENT))
    assert sent(stub) == []
    assert list(subscribers) == []
    stub.send(presence(ALICE, "subscribe", to=COMPONENT + "/resource"))
    assert sent(stub)[0] == ("subscribed", ALICE, COMPONENT)


def test_presence_from_the_target_is_not_ours(stub, handler, subscribers):
    stub.send(presence(TARGET + "/a", "subscribe"))
    stub.send(presence(TARGET, "probe"))
    assert sent(stub) == []
    assert list(subscribers) == []


# Availability


def test_available_while_a_resource_is_online(stub, handler, subscribers, resources):
    subscribers.add(ALICE)
    subscribers.add(BOB)
    resources.available(TARGET + "/a")
    assert sent(stub) == [available(ALICE), available(BOB)]
    resources.available(TARGET + "/b")
    resources.available(TARGET + "/a", 5)
    resources.unavailable(TARGET + "/a")
    assert sent(stub) == [], "still available"
    resources.unavailable(TARGET + "/b")
    assert sent(stub) == [unavailable(ALICE), unavailable(BOB)]
    resources.available(TARGET + "/c")
    resources.clear()
    assert sent(stub) == [available(ALICE), available(BOB), unavailable(ALICE), unavailable(BOB)]


def test_with_the_target_handler(stub, handler, subscribers, resources, clock):
    """
    The target's presence, through TargetPresenceHandler on the same
    stream, makes the component available; users' presence is not the
    target handler's business any more.
    """
    target = TargetPresenceHandler(JID(COMPONENT), JID(TARGET), resources, clock)
    target.parent = stub.xmlstream
    target.makeConnection(stub.xmlstream)
    target.connectionInitialized()
    subscribers.add(ALICE)
    sent(stub)
    stub.send(presence(TARGET + "/a"))
    assert sent(stub) == [available(ALICE)]
    stub.send(presence(ALICE + "/phone"))
    stub.send(presence(ALICE + "/phone", "unavailable"))
    assert stub.output == [], "no error, nothing forwarded"
    stub.send(presence(TARGET + "/a", "unavailable"))
    assert sent(stub) == [unavailable(ALICE)]


def test_new_stream_waits_for_the_resources(stub, handler, subscribers, resources, clock):
    """
    Nothing is said on a new stream until a resource comes online, or
    until the settle delay has passed: then the component is unavailable.
    """
    subscribers.add(ALICE)
    clock.advance(handler.settleDelay - 0.1)
    assert sent(stub) == []
    clock.advance(0.1)
    assert sent(stub) == [unavailable(ALICE)]


def test_a_resource_before_the_settle_delay(stub, handler, subscribers, resources, clock):
    subscribers.add(ALICE)
    resources.available(TARGET + "/a")
    assert sent(stub) == [available(ALICE)]
    clock.advance(handler.settleDelay)
    assert sent(stub) == []


def test_reconnection_says_only_what_changed(stub, handler, subscribers, resources, clock):
    subscribers.add(ALICE)
    resources.available(TARGET + "/a")
    sent(stub)

    def reconnect():
        # The stream drops: the resources are forgotten silently, to be
        # learned again on the new stream.
        handler.connectionLost(None)
        resources.forget()
        new = XmlStreamStub()
        handler.parent = new.xmlstream
        handler.makeConnection(new.xmlstream)
        handler.connectionInitialized()
        return new

    stub = reconnect()
    resources.available(TARGET + "/a")
    clock.advance(handler.settleDelay)
    assert sent(stub) == [], "the subscribers still see it available"
    stub = reconnect()
    clock.advance(handler.settleDelay)
    assert sent(stub) == [unavailable(ALICE)], "the target did not come back"


def test_connection_lost_cancels_the_settle_delay(stub, handler, clock):
    handler.connectionLost(None)
    assert clock.getDelayedCalls() == []


def test_stopping_says_unavailable(stub, handler, subscribers, resources):
    subscribers.add(ALICE)
    resources.available(TARGET + "/a")
    sent(stub)
    handler.stopping()
    assert sent(stub) == [unavailable(ALICE)]
    handler.stopping()
    assert sent(stub) == [], "said once"


def test_makeService_wires_the_handler(tmp_path):
    """
    The proxy's handler reads the subscribers of the state file (that it
    says unavailable when the proxy stops: tests/test_lifecycle.py).
    """
    from client_proxy.service import makeService

    path = tmp_path / "state.db"
    store = SQLiteSubscriberStore(str(path), COMPONENT, Clock())
    store.add(ALICE)
    store.close()
    proxy = makeService(build(stateFile=str(path)), Clock())
    assert isinstance(proxy.contacts, ComponentPresenceHandler)
    assert list(proxy.contacts.subscribers) == [ALICE]


def test_state_file_in_a_configuration_file(tmp_path):
    """
    state_file in a [[proxy]] table, relative to the file's folder.
    """
    toml = tmp_path / "proxy.toml"
    toml.write_text(
        '[[proxy]]\njid = "proxy.example.org"\ntarget = "%s"\nsecret = "s"\n'
        'state_file = "proxy.db"\n' % TARGET
    )
    [proxy] = config.loadFile(str(toml))
    assert proxy.stateFile == str(tmp_path / "proxy.db")
    toml.write_text(
        '[[proxy]]\njid = "proxy.example.org"\ntarget = "%s"\nsecret = "s"\n'
        'state_file = "missing/proxy.db"\n' % TARGET
    )
    with pytest.raises(config.ConfigError, match="state_file: .* does not exist"):
        config.loadFile(str(toml))


# Limits, access, quiet logs

EVIL = "evil.example"


@pytest.fixture
def events(monkeypatch):
    """
    What the handler logs, its tally's summaries included.
    """
    logged: list[dict] = []
    monkeypatch.setattr(ComponentPresenceHandler, "log", Logger(observer=logged.append))
    return logged


@pytest.fixture
def guarded(stub, resources, subscribers, clock, events):
    """
    A handler with small limits, denying C{bob@example.net}.
    """

    def make(maxSubscribers=5, maxPerDomain=3, allow=(), deny=(BOB,)):
        handler = ComponentPresenceHandler(
            JID(COMPONENT),
            JID(TARGET),
            resources,
            subscribers,
            clock,
            access=AccessPolicy(TARGET, allow, deny),
            limits=SubscriberLimits(clock, maxSubscribers, maxPerDomain),
        )
        handler.parent = stub.xmlstream
        handler.makeConnection(stub.xmlstream)
        handler.connectionInitialized()
        return handler

    return make


def answers(stub):
    """
    The types of the presence sent, by recipient; the output is emptied.
    """
    told: dict[str, list[str]] = {}
    for type, to, _ in sent(stub):
        told.setdefault(to, []).append(type or "available")
    return told


def test_subscriber_cap(stub, guarded, subscribers):
    guarded(maxSubscribers=3, maxPerDomain=10)
    users = ["u%d@d%d.example" % (i, i) for i in range(5)]
    for user in users:
        stub.send(presence(user + "/r", "subscribe"))
    told = answers(stub)
    assert [told[u][0] for u in users] == ["subscribed"] * 3 + ["unsubscribed"] * 2
    assert told[users[3]] == ["unsubscribed"], "nothing more than the refusal"
    assert list(subscribers) == users[:3]


def test_per_domain_cap(stub, guarded, subscribers):
    guarded(maxSubscribers=10, maxPerDomain=2)
    for i in range(4):
        stub.send(presence("u%d@%s" % (i, EVIL), "subscribe"))
    stub.send(presence(ALICE, "subscribe"))
    told = answers(stub)
    assert [told["u%d@%s" % (i, EVIL)][0] for i in range(4)] == [
        "subscribed", "subscribed", "unsubscribed", "unsubscribed"
    ]
    assert told[ALICE][0] == "subscribed", "other domains are not held back"
    assert subscribers.countDomain(EVIL) == 2


def test_a_subscriber_asking_again_at_the_cap_is_approved(stub, guarded, subscribers, clock):
    handler = guarded(maxSubscribers=1)
    stub.send(presence(ALICE + "/phone", "subscribe"))
    stub.send(presence(CAROL, "subscribe"))
    assert answers(stub)[CAROL] == ["unsubscribed"]
    handler.limits.rate.rate = 0.0  # and whatever the rate
    for _ in range(200):
        stub.send(presence(ALICE + "/laptop", "subscribe"))
    assert set(answers(stub)[ALICE]) == {"subscribed", "unavailable"}
    assert list(subscribers) == [ALICE]


def test_room_again_after_an_unsubscribe(stub, guarded, subscribers):
    guarded(maxSubscribers=1)
    stub.send(presence(ALICE, "subscribe"))
    stub.send(presence(ALICE, "unsubscribe"))
    stub.send(presence(CAROL, "subscribe"))
    assert answers(stub)[CAROL][0] == "subscribed"
    assert list(subscribers) == [CAROL]


def test_rate_per_domain(stub, guarded, subscribers, clock):
    """
    A domain gets a burst, then DomainRate.rate new subscribers a second;
    the refused may ask again later. Other domains have buckets of their
    own.
    """
    handler = guarded(maxSubscribers=10_000, maxPerDomain=10_000)
    rate = handler.limits.rate
    rate.rate, rate.burst = 2.0, 5.0
    for i in range(8):
        stub.send(presence("u%d@%s" % (i, EVIL), "subscribe"))
    stub.send(presence(ALICE, "subscribe"))
    assert subscribers.countDomain(EVIL) == 5
    assert ALICE in subscribers
    refused = [u for u, types in answers(stub).items() if types == ["unsubscribed"]]
    assert refused == ["u%d@%s" % (i, EVIL) for i in (5, 6, 7)]
    clock.advance(1.0)
    for i in (5, 6, 7):
        stub.send(presence("u%d@%s" % (i, EVIL), "subscribe"))
    assert subscribers.countDomain(EVIL) == 7, "two more a second"


def test_refusals_by_the_caps_do_not_spend_the_rate(stub, guarded, subscribers, clock):
    handler = guarded(maxSubscribers=10, maxPerDomain=1)
    handler.limits.rate.burst = 2.0
    stub.send(presence("a@" + EVIL, "subscribe"))
    for i in range(50):
        stub.send(presence("u%d@%s" % (i, EVIL), "subscribe"))
    stub.send(presence("a@" + EVIL, "unsubscribe"))
    stub.send(presence("b@" + EVIL, "subscribe"))
    assert "b@" + EVIL in subscribers


def test_rate_buckets_are_bounded(clock):
    """
    At most maxDomains buckets; the domain heard from least recently
    loses its own, and starts again with a full one.
    """
    rate = DomainRate(clock)
    rate.maxDomains, rate.rate, rate.burst = 100, 0.0, 1.0
    assert rate.allows("first.example")
    assert not rate.allows("first.example")
    for i in range(100):
        assert rate.allows("d%d.example" % i)
    assert len(rate._buckets) == 100
    assert not rate.allows("d99.example"), "a recent bucket is kept"
    assert rate.allows("first.example"), "the oldest went"


def test_a_refused_subscribe(stub, guarded, subscribers, resources):
    guarded()
    resources.available(TARGET + "/a")
    sent(stub)
    stub.send(presence(BOB + "/x", "subscribe"))
    assert sent(stub) == [("unsubscribed", BOB, COMPONENT)]
    assert BOB not in subscribers


def test_a_refused_probe(stub, guarded, subscribers, resources):
    """
    A subscriber the lists now refuse is no subscriber: its probe gets
    unsubscribed, it is forgotten, and is told nothing more.
    """
    subscribers.add(BOB)
    subscribers.add(ALICE)
    guarded()
    resources.available(TARGET + "/a")
    assert sent(stub) == [available(ALICE)]
    stub.send(presence(BOB, "probe"))
    assert sent(stub) == [("unsubscribed", BOB, COMPONENT)]
    assert list(subscribers) == [ALICE]


@pytest.mark.parametrize("type", [None, "unavailable", "unsubscribe", "subscribed", "error"])
def test_other_presence_from_the_refused_is_ignored(stub, guarded, type):
    guarded()
    stub.send(presence(BOB + "/x", type))
    assert sent(stub) == []


def test_an_allow_list(stub, guarded, subscribers):
    guarded(allow=("example.org",), deny=())
    stub.send(presence(ALICE, "subscribe"))
    stub.send(presence(BOB, "subscribe"))
    stub.send(presence("x@" + EVIL, "probe"))
    told = answers(stub)
    assert told[ALICE][0] == "subscribed"
    assert told[BOB] == told["x@" + EVIL] == ["unsubscribed"]
    assert list(subscribers) == [ALICE]


def test_a_flood_logs_a_bounded_summary(stub, guarded, subscribers, clock, events):
    """
    Thousands of refused subscriptions from forged senders: nothing is
    logged as they come, then a summary of a few lines.
    """
    handler = guarded(maxSubscribers=100_000, maxPerDomain=1_000)
    for i in range(5000):
        stub.send(presence("u%d@%s/r" % (i % 900, EVIL), "subscribe"))
        stub.send(presence("p%d@%s" % (i, EVIL), "probe"))
    stub.send(presence(BOB, "subscribe"))
    assert events == []
    assert subscribers.countDomain(EVIL) == handler.limits.rate.burst
    clock.advance(60)
    lines = [e for e in events if e.get("event") == "summary"]
    summaries = {(e["action"], e["noun"], e["reason"]): e for e in lines}
    assert len(lines) == len(summaries) == 4
    burst = int(handler.limits.rate.burst)
    accepted = summaries["accepted", "subscriptions", "new subscribers"]
    assert (accepted["count"], accepted["senders"], accepted["domain"]) == (burst, burst, EVIL)
    limited = summaries["refused", "subscriptions", "per-domain rate limit"]
    # u0 to u99 subscribed first; asking again, they are approved.
    assert limited["count"] == sum(1 for i in range(5000) if i % 900 >= burst)
    assert limited["senders"] == 900 - burst
    assert summaries["refused", "probes", "not a subscriber"]["count"] == 5000
    assert summaries["refused", "subscriptions", "not allowed"]["senders"] == 1


def test_stopping_flushes_the_store_and_the_tally(stub, resources, clock, events, tmp_path):
    path = str(tmp_path / "state.db")
    store = SQLiteSubscriberStore(path, COMPONENT, clock)
    handler = ComponentPresenceHandler(JID(COMPONENT), JID(TARGET), resources, store, clock)
    handler.parent = stub.xmlstream
    handler.makeConnection(stub.xmlstream)
    handler.connectionInitialized()
    stub.send(presence(ALICE, "subscribe"))
    handler.stopping()
    assert list(SQLiteSubscriberStore(path, COMPONENT, Clock())) == [ALICE]
    assert [e["action"] for e in events if e.get("event") == "summary"] == ["accepted"]
    assert clock.getDelayedCalls() == [], "no write, no summary left to do"
