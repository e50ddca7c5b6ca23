"""
The component as a contact: its subscribers and its presence, with a stub
stream.
"""

import pytest
from twisted.internet.task import Clock
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel.test.helpers import XmlStreamStub

from client_proxy import config
from client_proxy.contacts import (
    ComponentPresenceHandler,
    StateFileError,
    Subscribers,
    UnavailableOnStop,
)
from client_proxy.presence import Resources, TargetPresenceHandler

COMPONENT = "proxy.example.org"
TARGET = "service@example.org"
ALICE = "alice@example.org"
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
    return Subscribers(None, COMPONENT)


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


# Subscribers


def test_subscribers_in_memory():
    subscribers = Subscribers()
    assert subscribers.add(BOB) is True
    assert subscribers.add(ALICE) is True
    assert subscribers.add(ALICE) is False
    assert ALICE in subscribers and "carol@example.org" not in subscribers
    assert list(subscribers) == subscribers.all() == [ALICE, BOB]
    assert len(subscribers) == 2
    assert subscribers.remove(ALICE) is True
    assert subscribers.remove(ALICE) is False
    assert subscribers.all() == [BOB]
    assert Subscribers(":memory:").all() == [], "nothing persists in memory"


def test_subscribers_survive_in_the_file(tmp_path):
    path = str(tmp_path / "state.db")
    first = Subscribers(path, COMPONENT)
    first.add(ALICE)
    first.add(BOB)
    first.remove(BOB)
    first.close()
    again = Subscribers(path, COMPONENT)
    assert again.all() == [ALICE]


def test_reload_sees_what_another_process_wrote(tmp_path):
    path = str(tmp_path / "state.db")
    active = Subscribers(path, COMPONENT)
    standby = Subscribers(path, COMPONENT)
    active.add(ALICE)
    assert standby.all() == []
    standby.reload()
    assert standby.all() == [ALICE]


def test_proxies_may_share_a_file(tmp_path):
    path = str(tmp_path / "state.db")
    Subscribers(path, COMPONENT).add(ALICE)
    Subscribers(path, "other.example.org").add(BOB)
    assert Subscribers(path, COMPONENT).all() == [ALICE]
    assert Subscribers(path, "other.example.org").all() == [BOB]


def test_a_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "state.db"
    path.write_text("not a database, " * 100)
    with pytest.raises(StateFileError, match="file is not a database"):
        Subscribers(str(path))


def test_a_failed_write_is_kept_in_memory(tmp_path):
    subscribers = Subscribers(str(tmp_path / "state.db"))
    subscribers._db.close()
    assert subscribers.add(ALICE) is True
    assert ALICE in subscribers


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
    assert subscribers.all() == [ALICE]
    resources.available(TARGET + "/a")
    sent(stub)
    stub.send(presence(BOB, "subscribe"))
    assert sent(stub) == [("subscribed", BOB, COMPONENT), available(BOB)]
    stub.send(presence(BOB, "subscribe"))
    assert sent(stub) == [("subscribed", BOB, COMPONENT), available(BOB)], "approved again"
    assert subscribers.all() == [ALICE, BOB]


def test_unsubscribe(stub, handler, subscribers):
    subscribers.add(ALICE)
    stub.send(presence(ALICE + "/phone", "unsubscribe"))
    assert sent(stub) == [unavailable(ALICE), ("unsubscribed", ALICE, COMPONENT)]
    assert subscribers.all() == []


@pytest.mark.parametrize("type", ["unsubscribed", "subscribed", None, "unavailable", "error"])
def test_ignored(stub, handler, subscribers, type):
    """
    Presence about the user's own presence, and errors, get no answer.
    """
    subscribers.add(ALICE)
    stub.send(presence(ALICE + "/phone", type))
    assert sent(stub) == []
    assert subscribers.all() == [ALICE]


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
    assert subscribers.all() == []
    stub.send(presence(ALICE, "subscribe", to=COMPONENT + "/resource"))
    assert sent(stub)[0] == ("subscribed", ALICE, COMPONENT)


def test_presence_from_the_target_is_not_ours(stub, handler, subscribers):
    stub.send(presence(TARGET + "/a", "subscribe"))
    stub.send(presence(TARGET, "probe"))
    assert sent(stub) == []
    assert subscribers.all() == []


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
    service = UnavailableOnStop(handler)
    service.startService()
    service.stopService()
    assert sent(stub) == [unavailable(ALICE)]
    handler.stopping()
    assert sent(stub) == [], "said once"


def test_makeService_wires_the_handler(tmp_path):
    """
    The proxy's handler reads the subscribers of the state file, and says
    unavailable when the proxy stops.
    """
    from client_proxy.service import makeService

    path = tmp_path / "state.db"
    Subscribers(str(path), COMPONENT).add(ALICE)
    proxy = makeService(build(stateFile=str(path)), Clock())
    [stop] = [s for s in proxy if isinstance(s, UnavailableOnStop)]
    assert list(proxy)[-1] is stop, "stopped first, before the stream's end"
    assert isinstance(stop.handler, ComponentPresenceHandler)
    assert stop.handler.subscribers.all() == [ALICE]


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
