"""
examples/embedding.py, the proxy inside another Twisted application, run as
users run it: with twistd as a .tac file, and as a plain Python script.
"""

import signal
import subprocess
import sys
from urllib.request import urlopen

import pytest

from harness.proxy import ROOT, ProxyProcess
from harness.xmpp import Responder
from tests.conftest import COMPONENT, online, user

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
    and C{target}, started C{how} (C{twistd} or C{python}), its web site
    on a port the system chooses.
    """
    component, secret = next(iter(prosody.components.items()))
    env = {
        "CLIENT_PROXY_JID": component,
        "CLIENT_PROXY_TARGET": target,
        "CLIENT_PROXY_ENDPOINT": "tcp:host=127.0.0.1:port=%d" % (prosody.component_port,),
        "EXAMPLE_WEB_PORT": "0",
    }
    if how == "twistd":
        process = ProxyProcess(["-y", str(EXAMPLE)], env=env)
    else:
        process = ScriptProcess([], env=env)
    secret_file = process.workdir / "secret"
    secret_file.write_text(secret + "\n")
    process.env["CLIENT_PROXY_SECRET_FILE"] = str(secret_file)
    return process.start()


def get(port: int, path: str) -> str:
    with urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as response:
        assert response.status == 200
        return response.read().decode("utf-8")


@pytest.mark.parametrize("how", ["twistd", "python"])
def test_embedded_proxy_and_web_site(prosody, target, clients, how):
    service = clients(user(target), "a", Responder)
    app = example(prosody, target, how)
    try:
        online(app, service.jid)
        port = app.listening_port("Site")

        answer = clients("user", "embedding-" + how).iq(COMPONENT)
        assert answer.get("type") == "result", answer
        assert answer.get("from") == COMPONENT
        assert answer.find("{urn:test}served").get("by") == "a"

        page = get(port, "/")
        assert "<h1>%s</h1>" % (COMPONENT,) in page
        assert "connected: yes" in page
        assert "resources online: 1" in page
        metrics = get(port, "/metrics")
        assert 'client_proxy_requests_received_total{jid="%s"} 1.0' % (COMPONENT,) in metrics

        # twistd ends by the signal it got; the script returns from
        # reactor.run().
        expected = -signal.SIGTERM if how == "twistd" else 0
        assert app.stop(signal.SIGTERM) == expected, app.log()
        log = app.log()
        assert "Main loop terminated." in log, log
        assert "Traceback" not in log and "Unhandled" not in log, log
        # Stopped, not killed: the component connection was closed.
        assert "Disconnected from" in log, log
        if how == "python":
            assert "Disconnected from" in app.output(), "it logs to its standard output"
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
