"""
First contact with a fleet: many resources of the target online when the
component asks for the subscription, end to end through Prosody.
"""

import os
import subprocess
import sys
import time
from xml.sax.saxutils import quoteattr

import pytest

from tests.conftest import COMPONENT, online, user
from harness import processes
from harness.proxy import ROOT
from harness.xmpp import Responder, bare, tag

FLEET = 20


class Worker(Responder):
    """
    A resource of the fleet that approves the component's request, then
    writes to C{witness} through the component: a message that reaches it
    after the approval, on the same connection, has reached the component.
    """

    witness = ""

    def handle(self, stanza):
        handled = super().handle(stanza)
        if tag(stanza) == "presence" and stanza.get("type") == "subscribe":
            self.send(
                "<message to=%s><body>approved</body></message>"
                % quoteattr(COMPONENT + "/" + self.witness)
            )
        return handled


def test_a_fleet_approving_brings_one_probe(prosody, target, clients, proxy):
    """
    Each of 20 resources approves the component's subscription: the
    component gets 20 C{subscribed}, and probes once.
    """
    witness = clients("user", "witness")
    Worker.witness = witness.jid
    workers = [clients(user(target), "w%d" % n, Worker) for n in range(FLEET)]
    p = proxy(target)
    for _ in workers:
        witness.wait_for(lambda s: tag(s) == "message", timeout=20)
    for worker in workers:
        online(p, worker.jid)
        assert len(worker.subscribe_requests) == 1
    assert p.log().count("probing its resources") == 1


def test_approved_once_by_one_client(prosody, target, clients, proxy):
    """
    The fleet leaves the request to one client, which approves it: the
    others see it, and the component learns every resource all the same.
    """
    approver = clients(user(target), "approver", Responder)
    fleet = [clients(user(target), "w%d" % n) for n in range(FLEET)]
    p = proxy(target)
    for worker in fleet:
        online(p, worker.jid)
    online(p, approver.jid)
    assert len(approver.subscribe_requests) == 1
    assert p.log().count("probing its resources") == 1


def test_a_pre_approved_fleet_is_not_asked(prosody, target, clients, proxy):
    """
    RFC 6121, 3.4: one client approves the component before it asks; the
    server answers the request itself, and no resource of the fleet is
    asked, then or when the component connects again.
    """
    setup = clients(user(target), "setup", presence=False)
    setup.send("<presence type='subscribed' to=%s/>" % quoteattr(COMPONENT))
    setup.iq(target, "<query xmlns='jabber:iq:roster'/>")
    workers = [clients(user(target), "w%d" % n, Responder) for n in range(FLEET)]
    p = proxy(target)
    for worker in workers:
        online(p, worker.jid)
    for worker in workers:
        worker.iq(bare(worker.jid), "<query xmlns='jabber:iq:roster'/>")
        assert worker.subscribe_requests == []
    assert p.log().count("probing its resources") == 1
    late = clients(user(target), "late", Responder)
    online(p, late.jid)
    p.stop()
    again = proxy(target)
    for worker in workers:
        online(again, worker.jid)


class SampleClient:
    """
    examples/implementing_client.py as a process, logging to a file.
    """

    def __init__(self, prosody, jid: str, *options: str, workdir) -> None:
        self.jid = jid
        self.logfile = workdir / (jid.rpartition("/")[2] + ".log")
        password = workdir / "password"
        password.write_text("pw\n")
        with open(self.logfile, "wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable, str(ROOT / "examples" / "implementing_client.py"),
                    "--jid", jid, "--password-file", str(password), "--no-tls",
                    "--host", "127.0.0.1", "--port", str(prosody.c2s_port),
                    "--component", COMPONENT, *options,
                ],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert self.process.poll() is None and time.monotonic() < deadline, self.log()
            time.sleep(0.05)


@pytest.fixture
def sample(prosody, tmp_path):
    started = []

    def start(jid, *options):
        started.append(SampleClient(prosody, jid, *options, workdir=tmp_path))
        return started[-1]

    yield start
    for client in started:
        processes.stop(client.process, timeout=5)


def test_the_sample_clients_fleet_recipe(prosody, target, clients, proxy, sample):
    """
    The sample implementing client, as its documentation says to run a
    fleet: one client pre-approves, the workers leave the request alone,
    and none of them is asked.
    """
    setup = sample(target + "/setup", "--subscription", "pre-approve")
    setup.wait_for_log("Approving the presence subscription of %s in advance" % COMPONENT)
    roster = clients(user(target), "roster", presence=False)
    deadline = time.monotonic() + 10
    while not in_roster(roster, target, COMPONENT):
        assert time.monotonic() < deadline, "the pre-approval was not stored"
        time.sleep(0.05)
    workers = [sample("%s/w%d" % (target, n), "--subscription", "ignore") for n in range(3)]
    p = proxy(target)
    for worker in workers + [setup]:
        online(p, worker.jid)
    # A request straight to each client, after the component's request: if
    # that had reached a client, its log would show it by the answer.
    requester = clients("user", "echo")
    for worker in workers + [setup]:
        answer = requester.iq(worker.jid, "<echo xmlns='urn:example:echo'>hi</echo>")
        assert answer.get("type") == "result"
        assert "Leaving the presence subscription request" not in worker.log()
    assert setup.log().count("Approving the presence subscription") == 1


def in_roster(client, account, contact) -> bool:
    """
    Whether C{contact} is in the roster of C{account}, C{client}'s.
    """
    result = client.iq(account, "<query xmlns='jabber:iq:roster'/>")
    return any(item.get("jid") == contact for item in result.iter("{jabber:iq:roster}item"))
