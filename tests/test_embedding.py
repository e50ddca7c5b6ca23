"""
examples/embedding.py, the proxy inside another Twisted application, run as
users run it: with twistd as a .tac file, and as a plain Python script.
"""

import signal
import subprocess
import sys
from xml.sax.saxutils import quoteattr

import pytest

from tests.conftest import COMPONENT, online, user
from harness.proxy import ROOT, ProxyProcess
from harness.xmpp import Responder, error_condition, error_type, tag
from tests.test_reliability import wait_until

EXAMPLE = ROOT / "examples" / "embedding.py"


class ScriptProcess(ProxyProcess):
    """
    C{python examples/embedding.py}, which logs to its standard output (the
    process's L{output}); C{harness_events} sees its log events as well.
    """

    def command(self) -> list[str]:
        return [sys.executable, "-m", "harness_events", str(EXAMPLE)]


def example(prosody, target: str, how: str) -> ProxyProcess:
    """
    The example, configured by the environment for C{prosody}'s component
    and C{target}, started C{how} (C{twistd} or C{python}).
    """
    component, secret = next(iter(prosody.components.items()))
    env = {
        "CLIENT_PROXY_JID": component,
        "CLIENT_PROXY_TARGET": target,
        "CLIENT_PROXY_ENDPOINT": "tcp:host=127.0.0.1:port=%d" % (prosody.component_port,),
    }
    if how == "twistd":
        process = ProxyProcess(["-y", str(EXAMPLE)], env=env)
    else:
        process = ScriptProcess([], env=env)
    secret_file = process.workdir / "secret"
    secret_file.write_text(secret + "\n")
    process.env["CLIENT_PROXY_SECRET_FILE"] = str(secret_file)
    return process.start()


@pytest.mark.parametrize("how", ["twistd", "python"])
def test_a_wokkel_component_with_the_proxys_handlers(prosody, target, clients, how):
    """
    The component answers what its own handler serves (XEP-0092), and the
    proxy's handlers take the rest: IQs and messages go to the target.
    """
    service = clients(user(target), "a", Responder)
    app = example(prosody, target, how)
    try:
        online(app, service.jid)
        requester = clients("user", "embedding-" + how)

        version = requester.iq(COMPONENT, "<query xmlns='jabber:iq:version'/>")
        assert version.get("type") == "result", version
        assert version.findtext("{jabber:iq:version}query/{jabber:iq:version}name") == (
            "embedding example"
        )
        assert service.requests == [], "the component's own handler answered it"

        answer = requester.iq(COMPONENT)
        assert answer.get("type") == "result", answer
        assert answer.get("from") == COMPONENT
        assert answer.find("{urn:test}served").get("by") == "a"

        requester.send("<message to=%s type='chat'><body>hi</body></message>" % quoteattr(COMPONENT))
        message = service.wait_for(lambda s: tag(s) == "message")
        assert message.get("from") == COMPONENT + "/" + requester.jid

        # twistd ends by the signal it got; the script returns from
        # reactor.run().
        expected = -signal.SIGTERM if how == "twistd" else 0
        assert app.stop(signal.SIGTERM) == expected, app.log()
        log = app.log()
        assert "Main loop terminated." in log, log
        assert "Traceback" not in log and "Unhandled" not in log, log
    finally:
        app.remove()


def test_a_request_in_flight_is_answered_at_the_stop(prosody, target, clients):
    service = clients(user(target), "a", Responder, answer=False)
    app = example(prosody, target, "python")
    try:
        online(app, service.jid)
        requester = clients("user", "waiting")
        requester.send("<iq type='set' id='w' to=%s><query xmlns='urn:test'/></iq>" % quoteattr(COMPONENT))
        wait_until(lambda: service.requests, what="the request")
        assert app.stop(signal.SIGTERM) == 0, app.log()
        answer = requester.wait_for(lambda s: s.get("id") == "w")
        assert (error_type(answer), error_condition(answer)) == ("wait", "recipient-unavailable")
    finally:
        app.remove()


def test_configuration_error_is_a_message(tmp_path):
    """
    A missing setting stops the example with a message, not a traceback.
    """
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        env={"PATH": "/usr/bin:/bin", "CLIENT_PROXY_TARGET": "service@example.org"},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "embedding example: the component JID is missing" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
