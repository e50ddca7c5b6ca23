"""
The integration-test harness against a real ejabberd (harness/ejabberd.py):
a single node, a node with registered accounts, a two-node cluster, and
the proxy (the installed `twistd client-proxy`) in front of each.

Skipped when ejabberd is not installed, unless CI is set: then they fail.
"""

import hashlib
import os
import socket
import threading
import time
import xml.etree.ElementTree as ET
from typing import Iterator

import pytest

from harness.ejabberd import Ejabberd, EjabberdCluster, ejabberd_available
from harness.ports import listening
from harness.proxy import client_proxy
from harness.xmpp import NS_ROSTER, Client, Responder, StreamReader, error_condition, tag
from tests.conftest import COMPONENT, asking, online

if not ejabberd_available():
    if os.environ.get("CI"):
        pytest.fail("ejabberd is not installed, and CI is set: the ejabberd tests must run", pytrace=False)
    pytest.skip("ejabberd is not installed (apt-get install -y ejabberd)", allow_module_level=True)


@pytest.fixture(scope="module")
def ejabberd() -> Iterator[Ejabberd]:
    with Ejabberd() as server:
        yield server


@pytest.fixture(scope="module")
def cluster() -> Iterator[EjabberdCluster]:
    with EjabberdCluster(2) as servers:
        yield servers


@pytest.fixture
def connect():
    """Connect clients to a port; every one is dropped at the end of the test."""
    made = []

    def connect(port, user, resource, cls=Client, **kw):
        client = cls(port, user, resource, **kw)
        made.append(client)
        return client.connect()

    yield connect
    for client in made:
        client.kill()


@pytest.fixture
def proxies():
    """`twistd client-proxy` processes, removed at the end of the test."""
    started = []

    def start(server, target, *options):
        process = client_proxy(server, target, *options).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.remove()


def roster(client: Client) -> dict[str, str]:
    """
    The client's roster: JID -> subscription.
    """
    answer = client.iq(client.jid.partition("/")[0], payload="<query xmlns='%s'/>" % NS_ROSTER)
    assert answer.get("type") == "result"
    return {item.get("jid"): item.get("subscription") for item in answer.iter("{%s}item" % NS_ROSTER)}


def presence_from(jid: str, type: str | None = None):
    return lambda el: tag(el) == "presence" and el.get("from") == jid and el.get("type") == type


# A single node


def test_iq(ejabberd: Ejabberd, connect) -> None:
    """
    Any user name and password logs in; an IQ to a full JID gets its answer.
    """
    bob = connect(ejabberd.c2s_port, "bob", "desk", Responder)
    alice = connect(ejabberd.c2s_port, "alice", "phone", password="anything")
    answer = alice.iq(bob.jid)
    assert answer.get("type") == "result"
    assert answer.find("{urn:test}served").get("requester") == alice.jid
    assert [request.get("from") for request in bob.requests] == [alice.jid]


def test_iq_to_an_offline_resource(ejabberd: Ejabberd, connect) -> None:
    alice = connect(ejabberd.c2s_port, "alice", "offline-test")
    answer = alice.iq("nobody@example.org/gone")
    assert error_condition(answer) == "service-unavailable"
    assert answer.get("from") == "nobody@example.org/gone"


def test_subscription_is_remembered(ejabberd: Ejabberd, connect) -> None:
    """
    A subscription approved by a Responder is stored: the subscriber's
    roster has it after logging in again, and the server then sends the
    contact's presence at once.
    """
    carol = connect(ejabberd.c2s_port, "carol", "desk", Responder)
    dave = connect(ejabberd.c2s_port, "dave", "phone")
    dave.send("<presence type='subscribe' to='carol@example.org'/>")
    dave.wait_for(presence_from("carol@example.org", "subscribed"))
    dave.wait_for(presence_from(carol.jid))
    dave.close()

    again = connect(ejabberd.c2s_port, "dave", "laptop")
    assert roster(again)["carol@example.org"] == "to"
    again.wait_for(presence_from(carol.jid))


def test_subscription_to_an_account_never_seen(ejabberd: Ejabberd, connect) -> None:
    """
    Every account exists: a subscription request to one that never logged
    in is kept and delivered when it does (what the component needs when
    it starts before its target).
    """
    erin = connect(ejabberd.c2s_port, "erin", "desk")
    erin.send("<presence type='subscribe' to='newcomer@example.org'/>")
    assert roster(erin)["newcomer@example.org"] == "none"
    newcomer = connect(ejabberd.c2s_port, "newcomer", "first", Responder)
    erin.wait_for(presence_from("newcomer@example.org", "subscribed"))
    erin.wait_for(presence_from(newcomer.jid))
    assert [s.get("from") for s in newcomer.subscribe_requests] == ["erin@example.org"]


def test_proxied_answer(ejabberd: Ejabberd, connect, proxies) -> None:
    """
    `twistd client-proxy` against ejabberd, started before its target ever
    logged in: the subscription waits for the target, which approves it;
    a requester's IQ to the component is answered by the target.
    """
    target = "service0@example.org"
    proxy = proxies(ejabberd, target)
    asking(proxy, target)
    service = connect(ejabberd.c2s_port, "service0", "a", Responder)
    online(proxy, service.jid)
    requester = connect(ejabberd.c2s_port, "user", "abc")

    answer = requester.iq(COMPONENT)
    assert answer.get("type") == "result"
    assert answer.get("from") == COMPONENT
    assert answer.find("{urn:test}served").get("requester") == COMPONENT + "/" + requester.jid
    request = service.requests[0]
    assert request.get("to") == service.jid
    assert request.get("from") == COMPONENT + "/" + requester.jid


def test_internal_accounts_survive_a_restart(taking) -> None:
    """
    With C{auth="internal"} only registered accounts log in; Mnesia is on
    disc, so accounts and rosters survive a restart, on the same ports.
    Those are chosen at the first start: another program listens on the
    component port chosen first, before ejabberd binds it (ejabberd exits,
    eaddrinuse), and ejabberd starts again on other ports, its own.
    """
    taken = taking(2)  # epmd's port, c2s, then the component port
    with Ejabberd(auth="internal") as server:
        assert "eaddrinuse" in server.console_output(), "the first try failed"
        ports = server.ports()
        assert taken not in ports
        assert all(listening(server.process.pid, port) for port in ports)
        server.register("frank", "secret")
        server.register("grace", "secret")
        with pytest.raises(AssertionError, match="authentication failed"):
            Client(server.c2s_port, "frank", "x", password="wrong").connect()
        with pytest.raises(AssertionError, match="authentication failed"):
            Client(server.c2s_port, "stranger", "x", password="secret").connect()
        grace = Responder(server.c2s_port, "grace", "desk", password="secret").connect()
        frank = Client(server.c2s_port, "frank", "x", password="secret").connect()
        frank.send("<presence type='subscribe' to='grace@example.org'/>")
        frank.wait_for(presence_from("grace@example.org", "subscribed"))
        frank.kill()
        grace.kill()

        server.restart()
        assert server.ports() == ports
        frank = Client(server.c2s_port, "frank", "y", password="secret").connect()
        assert roster(frank) == {"grace@example.org": "to"}
        frank.kill()


# Two component connections for one host


class RawComponent:
    """
    A bare XEP-0114 connection: handshake, then every stanza received is
    recorded; IQ gets and sets are answered with a result naming this
    connection.
    """

    def __init__(self, port: int, host: str, secret: str, name: str) -> None:
        self.name = name
        self.received: list[ET.Element] = []
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.settimeout(None)
        self.ready = threading.Event()
        self.secret = secret
        self.sock.sendall(
            (
                "<stream:stream xmlns='jabber:component:accept'"
                " xmlns:stream='http://etherx.jabber.org/streams' to='%s'>" % (host,)
            ).encode()
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.ready.wait(5), "no handshake for %s" % (name,)

    def _read(self) -> None:
        try:
            for event, el in StreamReader(self.sock).events():
                if event == "root":
                    digest = hashlib.sha1((el.get("id") + self.secret).encode()).hexdigest()
                    self.sock.sendall(("<handshake>%s</handshake>" % (digest,)).encode())
                elif event == "stanza":
                    self._received(el)
        except OSError:
            return

    def _received(self, el: ET.Element) -> None:
        if tag(el) == "handshake":
            self.ready.set()
            return
        self.received.append(el)
        if tag(el) == "iq" and el.get("type") in ("get", "set"):
            self.sock.sendall(
                (
                    "<iq type='result' id='%s' from='%s' to='%s'><by xmlns='urn:test'>%s</by></iq>"
                    % (el.get("id"), el.get("to"), el.get("from"), self.name)
                ).encode()
            )

    def close(self) -> None:
        self.sock.close()


def test_two_component_connections_share_the_stanzas(ejabberd: Ejabberd, connect) -> None:
    """
    ejabberd (unlike Prosody) accepts a second connection for a component
    host, and spreads the stanzas for that host over both, one at a time.
    """
    host, secret = next(iter(ejabberd.components.items()))
    first = RawComponent(ejabberd.component_port, host, secret, "first")
    second = RawComponent(ejabberd.component_port, host, secret, "second")
    try:
        requester = connect(ejabberd.c2s_port, "user", "spread")
        answered_by = []
        for _ in range(20):
            answer = requester.iq(host)
            assert answer.get("type") == "result"
            answered_by.append(answer.find("{urn:test}by").text)
        assert set(answered_by) == {"first", "second"}
    finally:
        first.close()
        second.close()


# A cluster of two nodes


def answered(asker: Client, to: str) -> ET.Element:
    """
    The answer to an IQ across the cluster: a session opened on one node
    reaches the other node's session table a moment later, and until then
    that node bounces what is sent to it.
    """
    deadline = time.monotonic() + 5
    answer = asker.iq(to)
    while answer.get("type") == "error" and time.monotonic() < deadline:
        time.sleep(0.1)
        answer = asker.iq(to)
    return answer


def test_cluster(cluster: EjabberdCluster) -> None:
    one, two = cluster.nodes
    assert one.cluster_nodes() == two.cluster_nodes() == sorted([one.node, two.node])
    assert one.c2s_port != two.c2s_port and one.component_port != two.component_port


def test_cluster_iq_across_nodes(cluster: EjabberdCluster, connect) -> None:
    """
    A client on each node: IQs go both ways.
    """
    one, two = cluster.nodes
    alice = connect(one.c2s_port, "alice", "on-one", Responder)
    bob = connect(two.c2s_port, "bob", "on-two", Responder)
    assert answered(alice, bob.jid).find("{urn:test}served").get("requester") == alice.jid
    assert answered(bob, alice.jid).find("{urn:test}served").get("requester") == bob.jid


def test_cluster_proxy_on_the_other_node(cluster: EjabberdCluster, connect, proxies) -> None:
    """
    The component connected to node 2 serves a target and a requester
    connected to node 1; the subscription is in the shared Mnesia.
    """
    one, two = cluster.nodes
    service = connect(one.c2s_port, "service1", "a", Responder)
    proxy = proxies(two, "service1@example.org")
    online(proxy, service.jid)
    requester = connect(one.c2s_port, "user", "cluster")
    answer = answered(requester, COMPONENT)
    assert answer.get("type") == "result"
    assert answer.find("{urn:test}served").get("requester") == COMPONENT + "/" + requester.jid
