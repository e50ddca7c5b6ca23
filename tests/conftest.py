"""
Fixtures shared by the tests.
"""

import itertools
import os
import socket
from typing import Iterator

import pytest

from harness import ports
from harness.prosody import Prosody, prosody_available
from harness.proxy import Logged, client_proxy
from harness.xmpp import Client


@pytest.fixture(scope="session")
def prosody() -> Iterator[Prosody]:
    """
    A private Prosody for the whole test session. Without Prosody the
    integration tests are skipped, or fail if C{CI} is set.
    """
    if not prosody_available():
        if os.environ.get("CI"):
            pytest.fail("prosody is not installed, and CI is set: the integration tests must run")
        pytest.skip("prosody is not installed (scripts/setup installs it)")
    with Prosody() as server:
        yield server


@pytest.fixture
def taking(monkeypatch):
    """
    C{take(n)}: a port another program listens on, which
    L{harness.ports.free_port} gives as its C{n}-th answer from now on
    (from 0): a port taken after it was found free.
    """
    sockets = []

    def take(n):
        sock = socket.create_server(("127.0.0.1", 0))
        sockets.append(sock)
        port = sock.getsockname()[1]
        answers, free_port = itertools.count(), ports.free_port
        monkeypatch.setattr(ports, "free_port", lambda: port if next(answers) == n else free_port())
        return port

    yield take
    for sock in sockets:
        sock.close()


COMPONENT = "proxy.example.org"
_accounts = itertools.count()


@pytest.fixture
def target():
    """A fresh implementing account for each test: no state shared."""
    return "service%d@example.org" % next(_accounts)


@pytest.fixture
def clients(prosody):
    """Connect clients; every one is closed at the end of the test."""
    made = []

    def connect(user, resource, cls=Client, priority=0, presence=True, **kw):
        client = cls(prosody.c2s_port, user, resource, **kw)
        made.append(client)
        return client.connect(presence=presence, priority=priority)

    yield connect
    for client in made:
        client.kill()


@pytest.fixture
def proxy(prosody):
    """Start `twistd client-proxy` processes; stopped at the end of the test."""
    started = []

    def start(target, *options, **kw):
        process = client_proxy(prosody, target, *options, **kw).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.remove()


def user(target):
    return target.split("@")[0]


def online(proxy_process, resource, count=1):
    """Wait until the proxy has seen C{resource} come online C{count} times."""
    proxy_process.wait_for_log_event(
        Logged("Resource online: {resource}", resource=resource), count=count
    )


def offline(proxy_process, resource, count=1):
    """Wait until the proxy has seen C{resource} go offline C{count} times."""
    proxy_process.wait_for_log_event(
        Logged("Resource offline: {resource}", resource=resource), count=count
    )


def authenticated(proxy_process, jid, count=1, timeout=10.0):
    """Wait until the proxy has authenticated as C{jid} C{count} times."""
    proxy_process.wait_for_log_event(
        Logged(event="authenticated", jid=jid), timeout=timeout, count=count
    )


def asking(proxy_process, target):
    """Wait until the proxy has asked C{target} for a presence subscription."""
    proxy_process.wait_for_log_event(
        Logged("Asking {target} for a presence subscription", target=target)
    )
