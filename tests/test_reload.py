"""
SIGHUP reloads the configuration, end to end: a twistd process of the
installed package against a private Prosody, its log read as JSON events.
"""

import secrets
import signal
from xml.sax.saxutils import quoteattr

import pytest

from tests.support.events import matching, wait_for_event
from harness.prosody import Prosody, prosody_available
from harness.proxy import ROOT, ProxyProcess
from harness.xmpp import Client, Responder, error_condition, error_type

FIRST, SECOND, THIRD = "proxy.example.org", "proxy2.example.org", "proxy3.example.org"
TARGETS = {FIRST: "reload-a", SECOND: "reload-b", THIRD: "reload-c"}


@pytest.fixture(scope="module")
def server():
    """A private Prosody with three component hosts, for this module."""
    if not prosody_available():
        pytest.skip("prosody is not installed (scripts/setup installs it)")
    with Prosody(components={jid: secrets.token_hex(16) for jid in TARGETS}) as p:
        yield p


@pytest.fixture
def connect(server):
    made = []

    def connect(user, resource, cls=Client, **kw):
        client = cls(server.c2s_port, user, resource, **kw)
        made.append(client)
        return client.connect()

    yield connect
    for client in made:
        client.kill()


def write_config(server, path, proxies, **top):
    """A configuration file for C{proxies}: JID -> extra keys of its table."""
    text = 'endpoint = "tcp:host=127.0.0.1:port=%d"\n' % (server.component_port,)
    text += "".join("%s = %s\n" % item for item in top.items())
    for jid, extra in proxies.items():
        text += '\n[[proxy]]\njid = "%s"\ntarget = "%s@example.org"\nsecret = "%s"\n' % (
            jid, TARGETS[jid], server.components[jid])
        text += "".join("%s = %s\n" % item for item in extra.items())
    path.write_text(text)
    return str(path)


def online(process, client):
    wait_for_event(process, lambda e: e["text"] == "Resource online: " + client.jid)


def send(requester, id, to):
    requester.send(
        "<iq type='get' id=%s to=%s><query xmlns='urn:test'/></iq>" % (quoteattr(id), quoteattr(to))
    )


def answer(responder, request):
    responder.send(
        "<iq type='result' id=%s to=%s/>" % (quoteattr(request.get("id")), quoteattr(request.get("from")))
    )


def wait_until(condition, what):
    import time

    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.02)


@pytest.fixture
def run(tmp_path):
    started = []

    def run(args):
        process = ProxyProcess(args, workdir=tmp_path).start()
        started.append(process)
        return process

    yield run
    for process in started:
        process.stop()


def test_a_hangup_adds_removes_and_changes_in_place(server, connect, run, tmp_path):
    """
    One proxy is added, one removed (its request in flight answered), and
    one gets a shorter timeout while a request is in flight: it keeps its
    connection and the request, and the new timeout holds for the next.
    """
    path = tmp_path / "proxy.toml"
    write_config(server, path, {FIRST: {"timeout": 30}, SECOND: {}})
    process = run(["client-proxy", "--config", str(path), "--log-format", "json"])
    a = connect(TARGETS[FIRST], "a", Responder, answer=False)
    b = connect(TARGETS[SECOND], "b", Responder, answer=False)
    c = connect(TARGETS[THIRD], "c", Responder)
    online(process, a)
    online(process, b)
    requester = connect("user", "reload")
    send(requester, "kept", FIRST)
    send(requester, "dropped", SECOND)
    wait_until(lambda: a.requests and b.requests, "both requests")

    write_config(server, path, {FIRST: {"timeout": 2}, THIRD: {}})
    process.process.send_signal(signal.SIGHUP)
    reloaded = wait_for_event(process, event="reloaded")
    assert (reloaded["level"], reloaded["proxy"]) == ("info", None)
    assert matching(process, event="proxy_removed", proxy=SECOND)
    assert matching(process, event="proxy_added", proxy=THIRD)
    [changed] = matching(process, event="proxy_reconfigured", proxy=FIRST)
    assert "takes timeout in place" in changed["text"]

    dropped = requester.wait_for(lambda s: s.get("id") == "dropped")
    assert (error_type(dropped), error_condition(dropped)) == ("wait", "recipient-unavailable")
    assert dropped.get("from") == SECOND
    wait_for_event(process, event="authenticated", proxy=THIRD)
    online(process, c)
    assert requester.iq(THIRD).get("type") == "result"

    # The first proxy kept its connection and its request in flight.
    assert len(matching(process, event="authenticated", proxy=FIRST)) == 1
    answer(a, a.requests[0])
    assert requester.wait_for(lambda s: s.get("id") == "kept").get("type") == "result"
    # A new request times out after 2 s, not 30.
    send(requester, "late", FIRST)
    late = requester.wait_for(lambda s: s.get("id") == "late", timeout=10)
    assert error_condition(late) == "remote-server-timeout"

    assert process.process.poll() is None, "SIGHUP does not end the process"
    assert not [e for e in matching(process) if "Traceback" in e["text"]]


def test_a_hangup_with_a_broken_file_keeps_running(server, connect, run, tmp_path):
    path = tmp_path / "proxy.toml"
    write_config(server, path, {FIRST: {}})
    process = run(["client-proxy", "--config", str(path), "--log-format", "json"])
    a = connect(TARGETS[FIRST], "a", Responder)
    online(process, a)

    write_config(server, path, {FIRST: {"timeout": -1}})
    process.process.send_signal(signal.SIGHUP)
    failed = wait_for_event(process, event="reload_failed")
    assert failed["level"] == "error"
    assert "timeout: must be positive, not -1" in failed["text"]
    assert "the running configuration stays" in failed["text"]

    assert connect("user", "after").iq(FIRST).get("type") == "result"
    assert len(matching(process, event="authenticated", proxy=FIRST)) == 1
    assert process.process.poll() is None


def test_a_hangup_restarts_a_proxy_whose_secret_changed_through_proxy_tac(
    server, connect, tmp_path
):
    """
    proxy.tac reads its file again too; a secret changed in it restarts
    that proxy (text log: a .tac cannot see twistd's --logfile).
    """
    path = tmp_path / "proxy.toml"
    write_config(server, path, {FIRST: {}})
    process = ProxyProcess(
        ["-y", str(ROOT / "proxy.tac")], env={"CLIENT_PROXY_CONFIG": str(path)}, workdir=tmp_path
    )
    with process:
        a = connect(TARGETS[FIRST], "a", Responder)
        process.wait_for_log("Resource online: " + a.jid)
        config = path.read_text().replace(server.components[FIRST], "not-the-secret")
        path.write_text(config)
        process.process.send_signal(signal.SIGHUP)
        process.wait_for_log("Reload: restarting %s to apply secret" % FIRST)
        process.wait_for_log("Authentication failed: the server refused the secret")
        assert "not-the-secret" not in process.log()
