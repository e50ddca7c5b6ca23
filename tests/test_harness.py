"""
The integration-test harness against a real Prosody: clients, IQs,
subscriptions, disconnection.
"""

import ast
from typing import Iterator

import pytest
from twisted.logger import Logger

from harness.observer import harness_events
from harness.ports import listening
from harness.prosody import Prosody
from harness.proxy import ROOT, EventLog, Logged, Says, message
from harness.xmpp import Client, Responder, tag


@pytest.fixture
def alice(prosody: Prosody) -> Iterator[Client]:
    client = Client(prosody.c2s_port, "alice", "phone").connect()
    yield client
    client.close()


@pytest.fixture
def bob(prosody: Prosody) -> Iterator[Responder]:
    client = Responder(prosody.c2s_port, "bob", "desk").connect()
    yield client
    client.close()


def test_iq(alice: Client, bob: Responder) -> None:
    """
    An IQ to the responder's full JID comes back with its result, which
    names who served it and the requester the responder saw.
    """
    assert alice.jid == "alice@example.org/phone"
    answer = alice.iq(bob.jid)
    assert answer.get("type") == "result"
    served = answer.find("{urn:test}served")
    assert served.get("by") == "desk"
    assert served.get("requester") == alice.jid
    assert [request.get("from") for request in bob.requests] == [alice.jid]


def test_subscription_and_disconnection(alice: Client, bob: Responder) -> None:
    """
    The responder approves a subscription request; when it drops its
    connection, the subscriber is told it is unavailable.
    """
    alice.send("<presence type='subscribe' to='bob@example.org'/>")
    alice.wait_for(lambda el: tag(el) == "presence" and el.get("type") == "subscribed")
    alice.wait_for(lambda el: tag(el) == "presence" and el.get("from") == bob.jid and el.get("type") is None)
    assert [request.get("from") for request in bob.subscribe_requests] == ["alice@example.org"]
    bob.kill()
    alice.wait_for(lambda el: tag(el) == "presence" and el.get("from") == bob.jid and el.get("type") == "unavailable")


def test_the_benchmarks_do_not_import_the_tests() -> None:
    """
    The benchmarks take the servers and the proxy process from C{harness/},
    and neither imports the test package.
    """
    importers = []
    for path in sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "harness").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(name.partition(".")[0] == "tests" for name in names):
                importers.append("%s:%d" % (path.relative_to(ROOT), node.lineno))
    assert importers == []


def test_log_events_as_data(tmp_path, monkeypatch) -> None:
    """
    What the observer of the proxy processes writes, L{EventLog} reads:
    each event's fields, and its message as the process formatted it
    (C{{count:,}} included); a record half written waits for its end.
    """
    path = tmp_path / "events.json"
    events = EventLog(path)
    monkeypatch.setenv(harness_events.VARIABLE, str(path))
    log = Logger(namespace="test", observer=harness_events.observer())
    log.info("{proxy}: refused {count:,} requests", proxy="proxy.example.org", count=4900)
    with open(path, "a") as f:
        f.write('\x1e{"log_format": "Resource onl')
    [event] = events.events()
    assert (event["log_namespace"], event["count"]) == ("test", 4900)
    assert message(event) == "proxy.example.org: refused 4,900 requests"
    assert Logged("{proxy}: refused {count:,} requests", count=4900)(event)
    assert not Logged("{proxy}: refused {count:,} requests", count=1)(event)
    assert not Logged(count=4900, action="refused")(event)
    assert Says("refused 4,900")(event)
    assert events.text().endswith(" [test#info] proxy.example.org: refused 4,900 requests\n")
    with open(path, "a") as f:
        f.write('ine: {resource}", "resource": "a@example.org/b"}\n')
    assert [message(e) for e in events.events()][1:] == ["Resource online: a@example.org/b"]


def test_prosody_moves_off_a_port_taken_meanwhile(taking) -> None:
    """
    Another program listens on the component port chosen for Prosody
    before Prosody binds it: Prosody starts again on other ports, its own.
    """
    taken = taking(1)
    with Prosody() as server:
        assert "Failed to open server port %d" % (taken,) in server.log(), "the first try failed"
        assert taken not in (server.c2s_port, server.component_port)
        assert listening(server.process.pid, server.c2s_port)
        assert listening(server.process.pid, server.component_port)
        Client(server.c2s_port, "alice", "moved").connect().close()
