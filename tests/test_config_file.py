"""
Configuration files: any number of proxies, every error named by the proxy
and the key at fault.
"""

import textwrap

import pytest

from client_proxy import config
from client_proxy.config import ConfigError, loadFile
from harness.proxy import ROOT

GOOD = """\
endpoint = "tcp:host=127.0.0.1:port=5348"
timeout = 10
max_in_flight_per_requester = 7

[[proxy]]
jid = "proxy.example.org"
target = "service@example.org"
secret_file = "secret1"

[[proxy]]
jid = "proxy2.example.org"
target = "other@example.org"
secret = "inline-secret"
timeout = 2.5
max_in_flight = 50
strategy = "random"
"""


@pytest.fixture
def write(tmp_path):
    """Write a configuration file (and secret1, a secret file beside it)."""
    (tmp_path / "secret1").write_text("file-secret\n")

    def write(text, name="proxy.toml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return str(path)

    return write


def error(path):
    with pytest.raises(ConfigError) as raised:
        loadFile(path)
    return str(raised.value)


def proxy(**keys):
    """A [[proxy]] table with the given keys, in TOML."""
    keys = dict(dict(jid='"proxy.example.org"', target='"s@example.org"', secret='"s"'), **keys)
    return "[[proxy]]\n" + "".join(
        "%s = %s\n" % (key, value) for key, value in keys.items() if value is not None
    )


def q(text):
    return '"%s"' % (text,)


def test_two_proxies_with_top_level_defaults(write):
    first, second = loadFile(write(GOOD))
    assert first == config.build(
        jid="proxy.example.org",
        secret="file-secret",
        target="service@example.org",
        endpoint="tcp:host=127.0.0.1:port=5348",
        timeout=10.0,
        maxInFlightPerRequester=7,
        environ={},
    )
    assert first.secret == "file-secret", "a relative secret_file is beside the file"
    assert second == config.build(
        jid="proxy2.example.org",
        secret="inline-secret",
        target="other@example.org",
        endpoint="tcp:host=127.0.0.1:port=5348",
        timeout=2.5,
        maxInFlightPerRequester=7,
        maxInFlight=50,
        strategy="random",
        environ={},
    )


def test_built_in_defaults(write):
    [only] = loadFile(write(proxy()))
    assert only == config.build("proxy.example.org", "s@example.org", secret="s", environ={})


def test_top_level_secret_file_and_override(write, tmp_path):
    (tmp_path / "shared").write_text("shared-secret\n")
    path = write(
        'secret_file = "%s"\n' % (tmp_path / "shared",)
        + proxy(secret=None)
        + proxy(jid=q("proxy2.example.org"), secret=q("own"))
        + proxy(jid=q("proxy3.example.org"), secret=None, secret_file=q("secret1"))
    )
    assert [p.secret for p in loadFile(path)] == ["shared-secret", "own", "file-secret"]


def test_the_example_file(tmp_path):
    """The example file is valid, once its secret files exist."""
    text = (ROOT / "client_proxy" / "proxy.toml.example").read_text()
    text = text.replace("/etc/client-proxy/", "")
    for name in ("proxy.example.org.secret", "search.example.org.secret"):
        (tmp_path / name).write_text("x\n")
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    assert [p.jid for p in loadFile(str(path))] == ["proxy.example.org", "search.example.org"]


def test_proxies_service(write):
    from client_proxy.service import makeProxiesService

    service = makeProxiesService(loadFile(write(GOOD)))
    assert [child.name for child in service] == ["proxy.example.org", "proxy2.example.org"]


@pytest.mark.parametrize(
    "text, message",
    [
        (proxy() + proxy(jid=q("proxy2.example.org"), timeout=-1),
         "proxy.toml: [[proxy]] 2 (proxy2.example.org): timeout: must be positive, not -1"),
        (proxy(timeout=q("soon")),
         "[[proxy]] 1 (proxy.example.org): timeout: must be a number, not a string ('soon')"),
        (proxy(timeout=0), "[[proxy]] 1 (proxy.example.org): timeout: must be positive, not 0"),
        (proxy(timeout="nan"), "timeout: must be a finite number, not nan"),
        (proxy(timeout="true"), "timeout: must be a number, not a boolean (True)"),
        (proxy(max_in_flight=2.5),
         "[[proxy]] 1 (proxy.example.org): max_in_flight: must be an integer, not a float (2.5)"),
        (proxy(max_in_flight_per_requester=0),
         "max_in_flight_per_requester: must be positive, not 0"),
        (proxy(jid=q("user@proxy.example.org")),
         "[[proxy]] 1 (user@proxy.example.org): jid: 'user@proxy.example.org' must be a bare domain"),
        (proxy(jid=None), "proxy.toml: [[proxy]] 1: jid: is missing"),
        (proxy(jid=5), "proxy.toml: [[proxy]] 1: jid: must be a string, not an integer (5)"),
        (proxy(target=q("example.org")),
         "[[proxy]] 1 (proxy.example.org): target: 'example.org' must be an account"),
        (proxy(target=None), "[[proxy]] 1 (proxy.example.org): target: is missing"),
        (proxy(endpoint=q("tcp:nowhere")),
         "[[proxy]] 1 (proxy.example.org): endpoint: 'tcp:nowhere' does not parse"),
        (proxy(strategy=q("fastest")),
         "[[proxy]] 1 (proxy.example.org): strategy: 'fastest' is unknown; choose one of"),
        (proxy(secret=None), "[[proxy]] 1 (proxy.example.org): secret_file: is missing"),
        (proxy(secret=q("")), "[[proxy]] 1 (proxy.example.org): secret: is empty"),
        (proxy(secret_file=q("secret1")),
         "[[proxy]] 1 (proxy.example.org): secret_file: give secret_file or secret, not both"),
        (proxy(secret=None, secret_file=q("missing")),
         "[[proxy]] 1 (proxy.example.org): secret_file: cannot read the secret file "),
        (proxy(colour=q("blue")),
         "proxy.toml: [[proxy]] 1 (proxy.example.org): colour: unknown key; "
         "a [[proxy]] table takes: allow, deny, drain_show, endpoint, instance_endpoint, "
         "instance_jid, jid,"),
        ("timeout = -1\n" + proxy(), "proxy.toml: timeout: must be positive, not -1"),
        ("colour = 1\n" + proxy(), "proxy.toml: colour: unknown key; the top level takes: "),
        ('target = "s@example.org"\n' + proxy(),
         "proxy.toml: target: belongs in a [[proxy]] table, not at the top level"),
        ("timeout = 3\n", "proxy.toml: no [[proxy]] table"),
        ("proxy = []\n", "proxy.toml: no [[proxy]] table"),
        ("[proxy]\njid = 'proxy.example.org'\n",
         "proxy.toml: proxy: must be [[proxy]] tables, one per proxy, not a table"),
        (proxy(allow=q("example.org")),
         "[[proxy]] 1 (proxy.example.org): allow: must be an array, not a string ('example.org')"),
        (proxy(deny='["example.org", "a@b/c"]'),
         "[[proxy]] 1 (proxy.example.org): deny: 'a@b/c' must be a bare JID or a domain"),
        (proxy(route_by_features=q("yes")),
         "[[proxy]] 1 (proxy.example.org): route_by_features: must be a boolean, not a "
         "string ('yes')"),
        (proxy(route_by_features=1),
         "[[proxy]] 1 (proxy.example.org): route_by_features: must be a boolean, not an "
         "integer (1)"),
        (proxy(drain_show=q("busy")),
         "[[proxy]] 1 (proxy.example.org): drain_show: 'busy' is not a presence show; "
         "choose one of away, chat, dnd, xa"),
        (proxy(drain_show="true"),
         "[[proxy]] 1 (proxy.example.org): drain_show: must be a string, not a boolean (True)"),
        (proxy(max_stanza_size=1000),
         "[[proxy]] 1 (proxy.example.org): max_stanza_size: must be at least 4096, not 1000"),
        (proxy(target=q("s@proxy.example.org")),
         "[[proxy]] 1 (proxy.example.org): target: 's@proxy.example.org' is an account of the "
         "component's own domain"),
        (proxy(instance_jid=q("proxy.example.org")),
         "[[proxy]] 1 (proxy.example.org): instance_jid: 'proxy.example.org' must differ"),
        ("metrics = 9100\n" + proxy(), "proxy.toml: metrics: must be a string"),
        ("config = 'x'\n" + proxy(), "proxy.toml: config: unknown key"),
        (proxy(metrics=q("tcp:9100")), "[[proxy]] 1 (proxy.example.org): metrics: unknown key"),
        (proxy() + proxy(jid=q("Proxy.Example.ORG")),
         "proxy.toml: [[proxy]] 2 (Proxy.Example.ORG): jid: 'proxy.example.org' is already "
         "the jid of [[proxy]] 1: two proxies cannot share a jid"),
    ],
)
def test_errors_name_the_proxy_and_the_key(write, text, message):
    assert message in error(write(text))


def test_every_error_is_reported(write):
    text = proxy(timeout=-1) + proxy(jid=q("proxy2.example.org"), colour=1, strategy=q("x"))
    header, *lines = error(write(text)).splitlines()
    assert header.startswith("3 errors in ") and header.endswith("proxy.toml:")
    assert [line.split(": ")[1:3] for line in lines] == [
        ["[[proxy]] 1 (proxy.example.org)", "timeout"],
        ["[[proxy]] 2 (proxy2.example.org)", "colour"],
        ["[[proxy]] 2 (proxy2.example.org)", "strategy"],
    ]


def test_a_wrong_default_is_reported_once(write):
    path = write("timeout = 'soon'\n" + proxy() + proxy(jid=q("proxy2.example.org")))
    assert error(path) == "%s: timeout: must be a number, not a string ('soon')" % (path,)


def test_secrets_are_never_shown(write):
    message = error(write(proxy(secret="12345", timeout=-1)))
    assert "12345" not in message
    message = error(write(proxy(secret=q("hunter2"), secret_file=q("secret1"))))
    assert "hunter2" not in message and "file-secret" not in message


def test_toml_syntax_error_names_the_line(write):
    path = write(proxy() + "timeout = \n")
    message = error(path)
    assert message.startswith("%s: not a valid TOML file: " % (path,))
    assert "line 5" in message


@pytest.mark.parametrize("kind", ["missing", "folder", "binary"])
def test_unreadable_file(tmp_path, kind):
    path = tmp_path / "proxy.toml"
    if kind == "folder":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe")
    message = error(str(path))
    assert message.startswith(str(path) + ": ")
    assert "configuration file" in message or "UTF-8" in message


def test_access_lists_and_limits_in_a_file(write):
    [only] = loadFile(write(
        "deny = ['Spam.Example']\nmax_in_flight = 8\n"
        + proxy(allow='["example.org", "Partner@Example.NET"]', max_subscribers=5)
    ))
    assert (only.allow, only.deny) == (("example.org", "partner@example.net"), ("spam.example",))
    assert (only.maxInFlight, only.maxInFlightPerDomain, only.maxSubscribers) == (8, 2, 5)


def test_environment_names_a_file(write):
    path = write(GOOD)

    def proxies(environ):
        return [p.jid for p in config.load([config.environment(environ)]).proxies]

    assert proxies({"CLIENT_PROXY_CONFIG": path}) == ["proxy.example.org", "proxy2.example.org"]
    single = {"CLIENT_PROXY_JID": "proxy.example.org", "CLIENT_PROXY_TARGET": "s@example.org",
              "CLIENT_PROXY_SECRET": "s"}
    assert proxies(single) == ["proxy.example.org"]
    with pytest.raises(ConfigError, match="not with CLIENT_PROXY_JID$"):
        proxies({"CLIENT_PROXY_CONFIG": path, "CLIENT_PROXY_JID": "x"})


def test_command_line_config(write):
    from client_proxy.tap import Options

    options = Options(environ={})
    options.parseOptions(["--config", write(GOOD)])
    assert [p.jid for p in options["proxies"]] == ["proxy.example.org", "proxy2.example.org"]

    options = Options(environ={})
    options.parseOptions(["--jid", "proxy.example.org", "--target", "s@example.org",
                          "--secret", "s", "--timeout", "5"])
    [only] = options["proxies"]
    assert (only.jid, only.timeout, only.endpoint) == ("proxy.example.org", 5.0,
                                                       config.DEFAULT_ENDPOINT)

    with pytest.raises(SystemExit, match="not with --jid, --secret-file$"):
        Options(environ={}).parseOptions(["--config", write(GOOD), "--jid", "proxy.example.org",
                                          "--secret-file", "x"])
    with pytest.raises(SystemExit, match="timeout: must be positive"):
        Options(environ={}).parseOptions(["--config", write("timeout = -1\n" + proxy())])
