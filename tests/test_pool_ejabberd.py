"""
An active pool on an ejabberd cluster of two nodes: one instance connected
to each node, sharing proxy.example.org, each with a JID of its own.
"""

import os
import time

import pytest

from harness.ejabberd import EjabberdCluster, ejabberd_available
from harness.proxy import client_proxy
from harness.xmpp import Client, Responder
from tests.conftest import COMPONENT

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
            options = ("--instance-jid", host, "--instance-endpoint", endpoint)
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
        process.wait_for_log("Authenticated as " + host)
        process.wait_for_log("Resource online: " + service.jid)
    kinds = served(requesters, 20)
    assert kinds == {"result": 40}, kinds
    both = [p.log().count("Dropping") for p in instances]
    assert both == [0, 0]

    instances[0].kill()
    time.sleep(0.5)
    kinds = served(requesters, 20)
    assert kinds == {"result": 40}, kinds
    for client in [service] + requesters:
        client.kill()
