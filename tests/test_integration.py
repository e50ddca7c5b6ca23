"""
The proxy end to end: twistd processes of the installed package, a private
Prosody, real client connections.
"""

import signal
import time

import pytest

from harness.proxy import ROOT, Logged, ProxyProcess, run_twistd
from harness.xmpp import Responder, error_condition, error_type
from tests.conftest import COMPONENT, asking, offline, online, user

def test_the_seed_exchange(prosody, target, clients, proxy):
    """
    The exchange of mod_client_proxy's README, stanza by stanza.
    """
    service = clients(user(target), "a", Responder)
    p = proxy(target)
    online(p, service.jid)
    requester = clients("user", "abc")

    requester.send(
        "<iq type='get' id='1234' to='%s'><query xmlns='urn:test:seed'/></iq>" % COMPONENT
    )
    answer = requester.wait_for(lambda s: s.get("id") == "1234")

    request = service.requests[0]
    assert request.get("type") == "get"
    assert request.get("id") == "1234"
    assert request.get("to") == service.jid
    assert request.get("from") == COMPONENT + "/" + requester.jid
    assert request.find("{urn:test:seed}query") is not None

    assert answer.get("type") == "result"
    assert answer.get("from") == COMPONENT
    assert answer.get("to") == requester.jid
    served = answer.find("{urn:test}served")
    assert served.get("requester") == COMPONENT + "/" + requester.jid


def test_two_resources_share_requests(prosody, target, clients, proxy):
    a = clients(user(target), "a", Responder)
    b = clients(user(target), "b", Responder)
    p = proxy(target)
    online(p, a.jid)
    online(p, b.jid)
    requester = clients("user", "share")
    served = []
    for _ in range(40):
        answer = requester.iq(COMPONENT)
        assert answer.get("type") == "result"
        served.append(answer.find("{urn:test}served").get("by"))
    assert set(served) == {"a", "b"}
    assert len(a.requests) + len(b.requests) == 40


def test_no_resource_online(prosody, target, clients, proxy):
    p = proxy(target)
    asking(p, target)
    requester = clients("user", "lonely")
    started = time.monotonic()
    answer = requester.iq(COMPONENT, type="set")
    assert time.monotonic() - started < 2
    assert (error_type(answer), error_condition(answer)) == ("cancel", "service-unavailable")
    assert answer.get("from") == COMPONENT


def test_subscription_approved_after_the_proxy_started(prosody, target, clients, proxy):
    """
    The target logs in after the proxy asked: the server keeps the request
    and delivers it at login (RFC 6121, 3.1.3); once approved, the proxy
    learns the resource.
    """
    p = proxy(target)
    asking(p, target)
    service = clients(user(target), "late", Responder)
    online(p, service.jid)
    assert clients("user", "x").iq(COMPONENT).get("type") == "result"


@pytest.mark.parametrize(
    "resource",
    ["with spaces", "with/slashes/and@at", "Ünïcødé ☃ ünd mehr", "'quotes' & <angles>"],
)
def test_awkward_requester_resources(prosody, target, clients, proxy, resource):
    service = clients(user(target), "a", Responder)
    p = proxy(target)
    online(p, service.jid)
    requester = clients("user", resource)
    answer = requester.iq(COMPONENT)
    assert answer.get("type") == "result"
    assert answer.get("to") == requester.jid
    assert service.requests[-1].get("from") == COMPONENT + "/" + requester.jid


def test_requester_that_cannot_be_translated(prosody, target, clients, proxy):
    """
    A right-to-left resource behind a Latin address fails resourceprep's
    bidi rule as a whole: the proxy answers with an error, and stays up.
    """
    service = clients(user(target), "a", Responder)
    p = proxy(target)
    online(p, service.jid)
    requester = clients("user", "שלום")
    answer = requester.iq(COMPONENT)
    assert error_condition(answer) == "jid-malformed"
    assert service.requests == []
    assert clients("user", "fine").iq(COMPONENT).get("type") == "result"


def test_restart_with_the_target_online(prosody, target, clients, proxy):
    service = clients(user(target), "a", Responder)
    first = proxy(target)
    online(first, service.jid)
    first.kill()
    second = proxy(target)
    online(second, service.jid)
    assert clients("user", "again").iq(COMPONENT).get("type") == "result"


def test_resource_going_offline_is_forgotten(prosody, target, clients, proxy):
    a = clients(user(target), "a", Responder)
    b = clients(user(target), "b", Responder)
    p = proxy(target)
    online(p, a.jid)
    online(p, b.jid)
    a.kill()
    offline(p, a.jid)
    requester = clients("user", "after")
    for _ in range(10):
        assert requester.iq(COMPONENT).find("{urn:test}served").get("by") == "b"


def test_wrong_secret_is_an_authentication_failure(prosody, target, proxy):
    p = proxy(target, secret="not-the-secret")
    p.wait_for_log_event(
        Logged(reason="secret refused", jid=COMPONENT)
    )
    assert p.process.poll() is None, "it keeps trying"
    assert "not-the-secret" not in p.eventlog.path.read_text(), "in no event, field or message"


def test_proxy_tac_from_the_environment(prosody, target, clients, tmp_path):
    component, secret = next(iter(prosody.components.items()))
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret)
    process = ProxyProcess(
        ["-y", str(ROOT / "proxy.tac")],
        env={
            "CLIENT_PROXY_JID": component,
            "CLIENT_PROXY_TARGET": target,
            "CLIENT_PROXY_SECRET_FILE": str(secret_file),
            "CLIENT_PROXY_ENDPOINT": "tcp:host=127.0.0.1:port=%d" % prosody.component_port,
        },
        workdir=tmp_path,
    )
    service = clients(user(target), "a", Responder)
    with process:
        online(process, service.jid)
        assert clients("user", "tac").iq(COMPONENT).get("type") == "result"
    assert process.process.returncode == -signal.SIGTERM, "twistd ends by the signal it got"


def test_sigterm_stops_cleanly(prosody, target, clients, proxy):
    service = clients(user(target), "a", Responder)
    p = proxy(target)
    online(p, service.jid)
    assert p.stop(signal.SIGTERM) == -signal.SIGTERM, "twistd ends by the signal it got"
    assert "Traceback" not in p.log()
    assert "Server Shut Down." in p.log()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "s@example.org", "--secret", "x"], "component JID is missing"),
        (["--jid", "a@proxy.example.org", "--target", "s@example.org", "--secret", "x"],
         "bare domain"),
        (["--jid", "proxy.example.org", "--target", "s@example.org/r", "--secret", "x"],
         "must be a bare JID"),
        (["--jid", "proxy.example.org", "--target", "s@example.org",
          "--secret-file", "/nonexistent/secret"], "cannot read the secret file"),
        (["--jid", "proxy.example.org", "--target", "s@example.org", "--secret", "x",
          "--endpoint", "tcp:nowhere"], "does not parse"),
    ],
)
def test_bad_configuration(args, message):
    code, output = run_twistd(["client-proxy"] + args)
    assert code != 0
    assert message in output
    assert "Traceback" not in output


def test_bad_configuration_in_proxy_tac():
    code, output = run_twistd(
        ["-y", str(ROOT / "proxy.tac")],
        env={"CLIENT_PROXY_JID": "proxy.example.org", "CLIENT_PROXY_TARGET": "nobody"},
    )
    assert code != 0
    assert "must be an account" in output
    assert "Traceback" not in output
