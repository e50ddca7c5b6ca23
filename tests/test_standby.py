"""
Two instances for one component host on Prosody, which allows one
connection per host: one serves, the other stands by and takes over when
the first dies.

With an instance JID each, the standby watches the active one with pings
from its own JID and leaves Prosody's error log alone; without, it tries
to connect at the standby interval, and each try is an error line there.
"""

import secrets
import signal
import time

import pytest

from harness.prosody import Prosody, prosody_available
from harness.proxy import client_proxy
from harness.xmpp import Client, Responder
from tests.conftest import COMPONENT, online, user
from tests.support.events import matching, wait_for_event

NODE1, NODE2 = "node1." + COMPONENT, "node2." + COMPONENT
NS_PING = "urn:xmpp:ping"


def prosody_errors(server):
    """The error lines of Prosody's log."""
    return [line for line in server.log().splitlines() if "\terror\t" in line]


def wait_until(condition, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.02)


def takeover_time(active, requester):
    """
    Kill the active instance (SIGKILL: nothing is said to anyone) and
    return the seconds until the first proxied answer.
    """
    active.stop(signal.SIGKILL)
    killed = time.monotonic()
    # Meanwhile the server answers for the host that nobody is there.
    while requester.iq(COMPONENT).get("type") != "result":
        assert time.monotonic() - killed < 10, "no takeover"
    return time.monotonic() - killed


def test_standby_without_instance_jids_tries_at_the_interval(prosody, target, clients, proxy):
    service = clients(user(target), "a", Responder)
    active = proxy(target)
    online(active, service.jid)
    before = len(prosody_errors(prosody))
    standby = proxy(target, "--standby-interval", "0.2", "--log-format", "json")
    wait_for_event(standby, event="standby", proxy=COMPONENT)
    # Each try is refused with conflict, and an error line in Prosody's log.
    wait_until(lambda: len(prosody_errors(prosody)) - before >= 5, "five tries")
    assert len(matching(standby, event="standby")) == 1, "said once, not at every try"
    assert [e for e in matching(standby) if e["level"] in ("warning", "error")] == []
    assert matching(standby, event="authenticated") == []

    requester = clients("user", "failover")
    assert requester.iq(COMPONENT).get("type") == "result"
    print("takeover without instance JIDs: %.2f s" % takeover_time(active, requester))
    wait_for_event(standby, event="takeover", proxy=COMPONENT)


@pytest.fixture
def pair():
    """A Prosody with the shared host and one host per instance."""
    if not prosody_available():
        pytest.skip("prosody is not installed (scripts/setup installs it)")
    secret = secrets.token_hex(16)
    with Prosody(components={COMPONENT: secret, NODE1: secret, NODE2: secret}) as server:
        yield server


def test_a_quiet_standby_takes_over_within_2_seconds(pair):
    """
    The standby pings the shared JID from its instance JID: the active
    instance forwards each ping to its target, and Prosody's log gets no
    error while it does. Once the active instance is killed, Prosody
    answers the next ping for the host itself: the standby connects.
    """
    started = []
    service = Responder(pair.c2s_port, "pair", "a").connect()
    requester = Client(pair.c2s_port, "user", "pair").connect()
    try:
        active = client_proxy(pair, "pair@example.org", "--instance-jid", NODE1,
                              "--log-format", "json").start()
        started.append(active)
        wait_for_event(active, event="authenticated", proxy=COMPONENT, count=2)
        online(active, service.jid)
        assert requester.iq(COMPONENT).get("type") == "result"
        before = len(prosody_errors(pair))

        standby = client_proxy(pair, "pair@example.org", "--instance-jid", NODE2,
                               "--log-format", "json").start()
        started.append(standby)
        event = wait_for_event(standby, event="standby", proxy=COMPONENT)
        assert "watching it from %s with a ping every 1 s" % NODE2 in event["text"]
        # Its one try at the start; then ten pings, about ten seconds.
        wait_until(lambda: len(prosody_errors(pair)) - before >= 1, "the first try")
        tried = len(prosody_errors(pair))

        def pings():
            return [r for r in service.requests if r.find("{%s}ping" % NS_PING) is not None]

        wait_until(lambda: len(pings()) >= 10, "ten pings of the standby")
        assert pings()[0].get("from") == NODE1 + "/" + NODE2
        assert prosody_errors(pair)[tried:] == [], "no error while the active one is there"
        assert len(matching(standby, event="standby")) == 1
        assert [e for e in matching(standby) if e["level"] in ("warning", "error")] == []

        # Killed just after a ping: the worst case, about the interval.
        seconds = takeover_time(active, requester)
        print("takeover with a standby watch, a ping every 1 s (the default): %.2f s" % seconds)
        assert seconds < 2
        wait_for_event(standby, event="takeover", proxy=COMPONENT)
        wait_for_event(standby, event="authenticated", proxy=COMPONENT)
    finally:
        for process in started:
            process.remove()
        service.kill()
        requester.kill()
