"""
An active pool on an ejabberd cluster of two nodes: one instance connected
to each node, sharing proxy.example.org, each with a JID of its own.
"""

import os

import pytest

from harness.ejabberd import EjabberdCluster, ejabberd_available
from harness.proxy import client_proxy
from harness.xmpp import Client, Responder
from tests.conftest import COMPONENT, authenticated, online
from tests.test_metrics_integration import Metrics
from tests.test_reliability import wait_until

if not ejabberd_available():
    if os.environ.get("CI"):
        pytest.fail("ejabberd is not installed, and CI is set", pytrace=False)
    pytest.skip("ejabberd is not installed (scripts/setup installs it)", allow_module_level=True)

NODES = ("node1." + COMPONENT, "node2." + COMPONENT)


@pytest.fixture(scope="module")
def cluster():
    secret = "pool-secret"
    own = [{NODES[0]: secret}, {NODES[1]: secret}]
    with EjabberdCluster(2, components={COMPONENT: secret}, own_components=own) as servers:
        yield servers


@pytest.fixture
def pool(cluster):
    """Start one instance per node; every one is removed at the end."""
    started = []

    def start(target):
        for node, host in zip(cluster.nodes, NODES):
            endpoint = "tcp:host=127.0.0.1:port=%d" % node.own_component_ports[host]
            options = (
                "--instance-jid", host, "--instance-endpoint", endpoint,
                "--metrics", "tcp:0:interface=127.0.0.1",
            )
            started.append(client_proxy(node, target, *options).start())
        return started

    yield start
    for process in started:
        process.remove()


def served(requesters, count):
    """Send C{count} requests from each requester; the answers' kinds."""
    kinds = {}
    for requester in requesters:
        for _ in range(count):
            answer = requester.iq(COMPONENT, timeout=10)
            kind = answer.get("type")
            kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def answered(requester, timeout):
    """Whether a request gets its answer within C{timeout} seconds."""
    try:
        return requester.iq(COMPONENT, timeout=timeout).get("type") == "result"
    except AssertionError:
        return False


def clients_on_both_nodes(cluster, target_user):
    one, two = cluster.nodes
    service = Responder(one.c2s_port, target_user, "a").connect()
    requesters = [
        Client(one.c2s_port, "user", target_user + "-on-one").connect(),
        Client(two.c2s_port, "user", target_user + "-on-two").connect(),
    ]
    return service, requesters


def test_pool_serves_every_request_and_survives_an_instance(cluster, pool):
    service, requesters = clients_on_both_nodes(cluster, "pooled")
    instances = pool("pooled@example.org")
    for process, host in zip(instances, NODES):
        authenticated(process, host)
        online(process, service.jid)
    kinds = served(requesters, 20)
    assert kinds == {"result": 40}, kinds
    dropped = [Metrics(p.listening_port("Site")).total("client_proxy_stanzas_dropped_total")
               for p in instances]
    assert dropped == [0, 0], "no answer reached the other instance"

    instances[0].kill()
    # Node 1 gives what its clients send the component to the connections
    # on node 1 first: to the dead instance, and it is lost, until node 1
    # has ended that connection. An answer from node 1 shows it has.
    wait_until(lambda: answered(requesters[0], 0.5), what="node 1 to forget the dead instance")
    kinds = served(requesters, 20)
    assert kinds == {"result": 40}, kinds
    for client in [service] + requesters:
        client.kill()
