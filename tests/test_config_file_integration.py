"""
A configuration file end to end: one twistd process of the installed
package running two proxies, each with its own component connection to a
private Prosody and its own target.
"""

import secrets
import signal

import pytest

from harness.prosody import Prosody, prosody_available
from harness.proxy import ROOT, Logged, ProxyProcess, run_twistd
from harness.xmpp import Client, Responder
from tests.conftest import online

FIRST, SECOND = "proxy.example.org", "proxy2.example.org"


@pytest.fixture
def server():
    """A private Prosody with two component hosts, for this test alone."""
    if not prosody_available():
        pytest.skip("prosody is not installed (scripts/setup installs it)")
    with Prosody(components={FIRST: secrets.token_hex(16), SECOND: secrets.token_hex(16)}) as p:
        yield p


@pytest.fixture
def connect(server):
    """Connect clients to L{server}; every one is closed at the end."""
    made = []

    def connect(user, resource, cls=Client):
        client = cls(server.c2s_port, user, resource)
        made.append(client)
        return client.connect()

    yield connect
    for client in made:
        client.kill()


def write_config(server, folder):
    """
    A file for two proxies: the endpoint a top-level default, the first
    secret in a file beside it, the second inline.
    """
    (folder / "first.secret").write_text(server.components[FIRST] + "\n")
    path = folder / "proxy.toml"
    path.write_text(
        'endpoint = "tcp:host=127.0.0.1:port=%d"\n'
        "timeout = 5\n"
        "\n"
        "[[proxy]]\n"
        'jid = "%s"\n'
        'target = "service-a@example.org"\n'
        'secret_file = "first.secret"\n'
        "\n"
        "[[proxy]]\n"
        'jid = "%s"\n'
        'target = "service-b@example.org"\n'
        'secret = "%s"\n'
        % (server.component_port, FIRST, SECOND, server.components[SECOND])
    )
    return str(path)


def assert_both_served(process, connect):
    """Each component is served by its own target."""
    a = connect("service-a", "a", Responder)
    b = connect("service-b", "b", Responder)
    online(process, a.jid)
    online(process, b.jid)
    requester = connect("user", "both")
    for component, responder in ((FIRST, a), (SECOND, b)):
        answer = requester.iq(component)
        assert answer.get("type") == "result"
        assert answer.get("from") == component
        served = answer.find("{urn:test}served")
        assert served.get("by") == responder.resource
        assert served.get("requester") == component + "/" + requester.jid
    assert [r.get("from") for r in a.requests] == [FIRST + "/" + requester.jid]
    assert [r.get("from") for r in b.requests] == [SECOND + "/" + requester.jid]


def test_two_proxies_from_a_file(server, connect, tmp_path):
    process = ProxyProcess(
        ["client-proxy", "--config", write_config(server, tmp_path)], workdir=tmp_path
    )
    with process:
        assert_both_served(process, connect)
    assert process.process.returncode == -signal.SIGTERM, "twistd ends by the signal it got"
    assert "Traceback" not in process.log()
    authenticated = Logged(event="authenticated")
    assert sorted(e["jid"] for e in process.events() if authenticated(e)) == sorted([FIRST, SECOND])


def test_proxy_tac_with_a_config_file(server, connect, tmp_path):
    process = ProxyProcess(
        ["-y", str(ROOT / "proxy.tac")],
        env={"CLIENT_PROXY_CONFIG": write_config(server, tmp_path)},
        workdir=tmp_path,
    )
    with process:
        assert_both_served(process, connect)
    assert process.process.returncode == -signal.SIGTERM


BAD = """\
[[proxy]]
jid = "proxy.example.org"
target = "a@example.org"
secret = "top-secret-value"

[[proxy]]
jid = "proxy2.example.org"
target = "b@example.org"
secret = "top-secret-value"
timeout = -1
"""


@pytest.mark.parametrize(
    "text, options, message",
    [
        (BAD, [], "bad.toml: [[proxy]] 2 (proxy2.example.org): timeout: must be positive, not -1"),
        (BAD.replace("timeout = -1", 'timeout = "soon"'), [],
         "[[proxy]] 2 (proxy2.example.org): timeout: must be a number, not a string ('soon')"),
        (BAD.replace("timeout = -1", "colour = 1"), [],
         "[[proxy]] 2 (proxy2.example.org): colour: unknown key"),
        (BAD.replace("proxy2.", "proxy."), [],
         "[[proxy]] 2 (proxy.example.org): jid: 'proxy.example.org' is already the jid of "
         "[[proxy]] 1"),
        (BAD.replace("timeout = -1", "timeout ="), [], "not a valid TOML file: "),
        ("timeout = 1\n", [], "bad.toml: no [[proxy]] table"),
        (None, [], "bad.toml: cannot read the configuration file: No such file or directory"),
        (BAD.replace("timeout = -1", ""), ["--jid", "proxy.example.org", "--secret", "x"],
         "give their settings in the file, not with --jid, --secret"),
    ],
)
def test_bad_config_file(tmp_path, text, options, message):
    path = tmp_path / "bad.toml"
    if text is not None:
        path.write_text(text)
    code, output = run_twistd(["client-proxy", "--config", str(path), *options])
    assert code != 0
    assert message in output
    assert "Traceback" not in output
    assert "top-secret-value" not in output


def test_bad_config_file_in_proxy_tac(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    code, output = run_twistd(["-y", str(ROOT / "proxy.tac")], env={"CLIENT_PROXY_CONFIG": str(path)})
    assert code != 0
    assert "timeout: must be positive, not -1" in output
    assert "Traceback" not in output
    assert "top-secret-value" not in output


def test_the_plugin_reads_the_environment(server, connect, tmp_path):
    """
    `twistd client-proxy` takes every CLIENT_PROXY_* variable, the command
    line winning, and warns once of a secret on the command line.
    """
    process = ProxyProcess(
        ["client-proxy", "--secret", server.components[FIRST], "--timeout", "5"],
        env={
            "CLIENT_PROXY_JID": FIRST,
            "CLIENT_PROXY_TARGET": "service-a@example.org",
            "CLIENT_PROXY_ENDPOINT": "tcp:host=127.0.0.1:port=%d" % (server.component_port,),
            "CLIENT_PROXY_TIMEOUT": "-1",
            "CLIENT_PROXY_SECRET_FILE": str(tmp_path / "not-read"),
        },
        workdir=tmp_path,
    )
    with process:
        responder = connect("service-a", "a", Responder)
        online(process, responder.jid)
        answer = connect("user", "env").iq(FIRST)
        assert (answer.get("type"), answer.get("from")) == ("result", FIRST)
    log = process.log()
    assert log.count("--secret puts the component secret on the command line") == 1
    assert server.components[FIRST] not in process.eventlog.path.read_text()


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["client-proxy", "--jid", FIRST, "--target", "s@example.org", "--secret", "x",
          "--timeout", "-1"], {}, "client-proxy: --timeout must be positive, not '-1'"),
        (["client-proxy", "--jid", FIRST, "--colour", "blue"], {},
         "client-proxy: option --colour not recognized (see twistd client-proxy --help)"),
        (["client-proxy", "--jid", FIRST, "--target", "s@example.org"],
         {"CLIENT_PROXY_SECRET": "x", "CLIENT_PROXY_MAX_STANZA_SIZE": "100"},
         "client-proxy: CLIENT_PROXY_MAX_STANZA_SIZE must be at least 4096, not '100'"),
        (["client-proxy", "--jid", FIRST, "--target", "s@example.org", "--secret", "x",
          "--secret-file", "/x"], {}, "client-proxy: give --secret-file or --secret, not both"),
        (["client-proxy", "--jid", FIRST, "--target", "s@" + FIRST, "--secret", "x"], {},
         "client-proxy: --target 's@proxy.example.org' is an account of the component's own "
         "domain proxy.example.org: the target must be an account of the server"),
        (["-y", str(ROOT / "proxy.tac")],
         {"CLIENT_PROXY_JID": FIRST, "CLIENT_PROXY_TARGET": "s@example.org",
          "CLIENT_PROXY_SECRET": "x", "CLIENT_PROXY_ALLOW": "a@example.org/r"},
         "client-proxy: CLIENT_PROXY_ALLOW 'a@example.org/r' must be a bare JID or a domain, "
         "without a resource"),
    ],
)
def test_a_configuration_error_is_one_line(args, env, message):
    """
    One line and exit status 1: neither twistd's usage text nor a
    traceback.
    """
    code, output = run_twistd(args, env=env)
    assert (code, output) == (1, message + "\n")


def test_a_state_file_that_is_no_database_is_one_line(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_text("not a database, " * 100)
    code, output = run_twistd(["client-proxy", "--jid", FIRST, "--target", "s@example.org",
                               "--secret", "x", "--state-file", str(garbage)])
    assert code == 1
    assert output.startswith("client-proxy: ") and output.count("\n") == 1
    assert str(garbage) in output
