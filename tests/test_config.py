"""
Checking the configuration: the settings declared once, and every way in
(Python, the command line, the environment, a file) made from them.
"""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import pytest

from client_proxy import config
from client_proxy.tap import Options, makeProcessService
from harness.proxy import ROOT

COMPONENT, TARGET = "proxy.example.org", "service@example.org"


def build(**kw):
    settings = dict(jid=COMPONENT, target=TARGET, secret="s")
    settings.update(kw)
    return config.build(environ={}, **settings)


def parse(args, environ=None):
    """The options of `twistd client-proxy ARGS` with C{environ}."""
    options = Options(environ={} if environ is None else environ)
    options.parseOptions(args)
    return options


def test_defaults():
    c = build()
    assert (c.jid, c.target, c.endpoint) == (COMPONENT, TARGET, config.DEFAULT_ENDPOINT)
    assert c.timeout == 30
    assert (c.maxStanzaSize, c.maxRetainedBytes) == (480 * 1024, 64 * 1024 * 1024)
    assert (c.maxInFlight, c.maxInFlightPerDomain, c.maxInFlightPerRequester) == (
        100_000, 25_000, 1000)
    assert (c.maxSubscribers, c.maxSubscribersPerDomain) == (100_000, 10_000)
    assert (c.allow, c.deny) == ((), ())
    assert (c.drainShow, c.routeByFeatures) == ("xa", False)


def test_secret_never_in_repr():
    assert "hunter2" not in repr(build(secret="hunter2"))


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(jid=None), "component JID is missing"),
        (dict(jid="user@proxy.example.org"), "bare domain"),
        (dict(jid="proxy.example.org/r"), "bare domain"),
        (dict(jid="bad host!"), "not a valid JID"),
        (dict(target="example.org"), "must be an account"),
        (dict(target="service@example.org/res"), "must be a bare JID"),
        (dict(target=None), "target is missing"),
        (dict(endpoint="bogus:thing"), "does not parse"),
        (dict(endpoint="tcp:host=x"), "does not parse"),
        (dict(timeout="soon"), "timeout 'soon' is not a number"),
        (dict(timeout="-1"), "must be positive"),
        (dict(strategy="fastest"), "strategy 'fastest' is unknown"),
        (dict(maxStanzaSize=4095), "the largest stanza must be at least 4096, not 4095"),
        (dict(allow="alice@example.org/phone"), "must be a bare JID or a domain"),
        (dict(deny="a..b"), "the deny list 'a..b' is not a valid JID"),
        (dict(allow=["example.org", 5]), "the allow list must hold strings, not 5"),
    ],
)
def test_errors_name_the_setting(settings, message):
    with pytest.raises(config.ConfigError, match=message):
        build(**settings)


def test_an_unknown_parameter_is_a_type_error():
    with pytest.raises(TypeError, match="colour"):
        build(colour="blue")


def test_secret_sources(tmp_path):
    path = tmp_path / "secret"
    path.write_text("from-file\n")
    assert build(secret=None, secretFile=str(path)).secret == "from-file"
    env = {"CLIENT_PROXY_SECRET_FILE": str(path)}
    assert config.build(COMPONENT, "s@example.org", environ=env).secret == "from-file"
    env = {"CLIENT_PROXY_SECRET": "from-env"}
    assert config.build(COMPONENT, "s@example.org", environ=env).secret == "from-env"
    assert config.build(COMPONENT, "s@example.org", secret="own", environ=env).secret == "own"
    with pytest.raises(config.ConfigError, match="secret is missing"):
        config.build(COMPONENT, "s@example.org", environ={})


def test_unreadable_or_empty_secret_file(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read the secret file"):
        build(secret=None, secretFile=str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(config.ConfigError, match="is empty"):
        build(secret=None, secretFile=str(empty))


def test_from_environment():
    c = config.fromEnvironment(
        {
            "CLIENT_PROXY_JID": COMPONENT,
            "CLIENT_PROXY_TARGET": TARGET,
            "CLIENT_PROXY_SECRET": "s",
            "CLIENT_PROXY_ENDPOINT": "unix:path=/run/xmpp.sock",
            "CLIENT_PROXY_TIMEOUT": "5",
        }
    )
    assert (c.endpoint, c.timeout) == ("unix:path=/run/xmpp.sock", 5.0)


@pytest.mark.parametrize(
    "settings, key, detail",
    [
        (dict(timeout=0), "timeout", "must be positive, not 0"),
        (dict(timeout="inf"), "timeout", "must be a finite number, not 'inf'"),
        (dict(maxInFlight="x"), "maxInFlight", "'x' is not an integer"),
        (dict(jid="a@proxy.example.org"), "jid", "'a@proxy.example.org' must be a bare domain"),
        (dict(secret=None, secretFile="/nonexistent"), "secretFile", "cannot read"),
        (dict(secret=None), "secret", "is missing"),
        (dict(secretFile="/nonexistent"), "secret", "give secret_file or secret, not both"),
        (dict(target="s@proxy.example.org"), "target", "'s@proxy.example.org' is an account "
         "of the component's own domain"),
    ],
)
def test_errors_carry_the_key(settings, key, detail):
    """
    An error says which setting is at fault, and what is wrong without
    the setting's name, for callers that name it their own way.
    """
    with pytest.raises(config.ConfigError) as raised:
        build(**settings)
    assert raised.value.key == key
    assert raised.value.detail.startswith(detail)


def test_empty_means_default():
    c = build(timeout="", endpoint="", strategy="", maxInFlight=None, allow="")
    assert (c.timeout, c.endpoint, c.strategy, c.allow) == (
        30.0, config.DEFAULT_ENDPOINT, "random", ())


@pytest.mark.parametrize("settings", [dict(jid="proxy..example.org"), dict(target="s@example..org")])
def test_jids_stringprep_cannot_read_are_errors_not_tracebacks(settings):
    with pytest.raises(config.ConfigError, match="not a valid JID"):
        build(**settings)


def test_a_huge_integer_limit_is_accepted():
    assert build(maxInFlight=str(10**400)).maxInFlight == 10**400


# The new limits and lists.


@pytest.mark.parametrize(
    "settings, perDomain",
    [
        (dict(), 25_000),
        (dict(maxInFlight=10), 2),
        (dict(maxInFlight=3), 1),
        (dict(maxInFlight=3, maxInFlightPerDomain=7), 7),
    ],
)
def test_the_domain_limit_is_a_quarter_of_the_total_by_default(settings, perDomain):
    assert build(**settings).maxInFlightPerDomain == perDomain


def test_the_largest_stanza_can_be_4096_bytes():
    assert build(maxStanzaSize="4096").maxStanzaSize == 4096


@pytest.mark.parametrize(
    "value, expected",
    [
        ("alice@example.org", ("alice@example.org",)),
        (" Alice@Example.ORG , evil.example ,,", ("alice@example.org", "evil.example")),
        (["example.org", "example.org", "b@example.org"], ("example.org", "b@example.org")),
        ((), ()),
    ],
)
def test_access_lists_are_normalised(value, expected):
    assert build(allow=value).allow == expected
    assert build(deny=value).deny == expected


# The component's own domain.


@pytest.mark.parametrize(
    "settings",
    [
        dict(target="service@proxy.example.org"),
        dict(target="service@me.example.org", instanceJid="me.example.org"),
    ],
)
def test_a_target_on_the_component_s_domain_is_an_error(settings):
    with pytest.raises(config.ConfigError, match="the component's own domain"):
        build(**settings)


def test_the_instance_jid_must_differ():
    with pytest.raises(config.ConfigError, match="must differ"):
        build(instanceJid=COMPONENT)


# The schema: every setting everywhere.


def test_every_setting_has_its_field():
    proxy = {s.name for s in config.SETTINGS if s.scope == config.PROXY and s.field == s.name}
    assert proxy == {f.name for f in dataclasses.fields(config.ProxyConfig)}
    process = {s.name for s in config.SETTINGS if s.scope == config.PROCESS}
    assert process | {"proxies"} == {f.name for f in dataclasses.fields(config.ProcessConfig)}
    for s in config.SETTINGS:
        assert s.field in config.SETTINGS_BY_NAME, s.name


def test_every_setting_in_help():
    usage = Options().getUsage(width=10_000)
    for s in config.SETTINGS:
        written = "--%s " % (s.option,) if s.flag else "--%s=" % (s.option,)
        line = next(line for line in usage.splitlines() if line.lstrip().startswith(written))
        assert s.variable in line and "default: " + s.describeDefault() in line, line


def test_every_setting_in_the_reference():
    reference = config.reference()
    for s in config.SETTINGS:
        row = reference.split("``--%s``" % (s.option,), 1)[1].split("   * - ", 1)[0]
        assert "``%s``" % (s.variable,) in row
        assert ("``%s``" % (s.key,) in row) == s.inFile
        assert s.describeDefault() in row and s.help in row


def test_the_docs_hold_the_reference():
    """docs/options.rst is the reference made from the settings, as it is now."""
    assert (ROOT / "docs" / "options.rst").read_text().endswith(config.reference()), (
        "docs/options.rst is out of date: run scripts/options-reference"
    )
    assert "docs/options.rst" in (ROOT / "README.rst").read_text()


def test_every_file_setting_in_the_example():
    example = (ROOT / "client_proxy" / "proxy.toml.example").read_text()
    keys = {line.lstrip("# ").split(" = ")[0] for line in example.splitlines() if " = " in line}
    assert {s.key for s in config.SETTINGS if s.inFile} <= keys


#: For each setting: a value as the command line and the environment give
#: it, as a TOML file gives it, and as it is once checked.
SAMPLES = {
    "jid": ("Proxy.Example.ORG", '"proxy.example.org"', "proxy.example.org"),
    "target": ("s@example.org", '"s@example.org"', "s@example.org"),
    "secretFile": None,  # in test_secret_file_everywhere
    "secret": ("hunter2", '"hunter2"', "hunter2"),
    "endpoint": ("unix:path=/run/x", '"unix:path=/run/x"', "unix:path=/run/x"),
    "timeout": ("2.5", "2.5", 2.5),
    "keepalive": ("7", "7", 7.0),
    "standbyInterval": ("3", "3", 3.0),
    "maxInFlightPerRequester": ("11", "11", 11),
    "maxInFlightPerDomain": ("12", "12", 12),
    "maxInFlight": ("13", "13", 13),
    "maxRetainedBytes": ("14", "14", 14),
    "maxStanzaSize": ("5000", "5000", 5000),
    "maxSubscribers": ("15", "15", 15),
    "maxSubscribersPerDomain": ("16", "16", 16),
    "allow": ("a@example.org,example.net", '["a@example.org", "example.net"]',
              ("a@example.org", "example.net")),
    "deny": ("evil.example", '["evil.example"]', ("evil.example",)),
    "strategy": ("sticky", '"sticky"', "sticky"),
    "drainShow": ("dnd", '"dnd"', "dnd"),
    "routeByFeatures": ("true", "true", True),
    "stateFile": (":memory:", '":memory:"', None),
    "instanceJid": ("me.example.org", '"me.example.org"', "me.example.org"),
    "instanceEndpoint": ("unix:path=/run/y", '"unix:path=/run/y"', "unix:path=/run/y"),
    "metrics": ("tcp:9100:interface=127.0.0.1", '"tcp:9100:interface=127.0.0.1"',
                "tcp:9100:interface=127.0.0.1"),
    "logFormat": ("json", '"json"', "json"),
    "config": None,  # in the tests of files
}


@pytest.mark.parametrize(
    "args, environ, expected",
    [
        ([], {}, False),
        ([], {"CLIENT_PROXY_ROUTE_BY_FEATURES": "true"}, True),
        (["--no-route-by-features"], {"CLIENT_PROXY_ROUTE_BY_FEATURES": "true"}, False),
        (["--route-by-features"], {"CLIENT_PROXY_ROUTE_BY_FEATURES": "false"}, True),
        (["--no-route-by-features"], {}, False),
    ],
)
def test_a_switch_is_turned_either_way_on_the_command_line(args, environ, expected):
    """
    The command line wins over the environment for a switch too: each
    flag has its opposite.
    """
    options = parse(["--jid", COMPONENT, "--target", TARGET, "--secret", "s", *args], environ)
    (proxy,) = options["proxies"]
    assert proxy.routeByFeatures is expected


def test_every_setting_has_a_sample():
    assert set(SAMPLES) == set(config.SETTINGS_BY_NAME)


def given(kind):
    """Every sample setting with a value, C{kind} 0 for text, 1 for TOML."""
    return {name: sample[kind] for name, sample in SAMPLES.items() if sample}


def expected(scope):
    return {
        name: sample[2] for name, sample in SAMPLES.items()
        if sample and config.SETTINGS_BY_NAME[name].scope == scope
    }


def fields(c, names):
    return {name: getattr(c, name) for name in names}


def test_every_setting_from_the_command_line():
    # A switch is a flag, given without its value.
    args = [arg for name, text in given(0).items()
            for arg in ("--" + config.SETTINGS_BY_NAME[name].option, text)
            if not (config.SETTINGS_BY_NAME[name].flag and arg == text)]
    options = parse(args)
    [proxy] = options["proxies"]
    assert fields(proxy, expected(config.PROXY)) == expected(config.PROXY)
    assert options["metrics"] == SAMPLES["metrics"][2]


def test_every_setting_from_the_environment():
    environ = {config.SETTINGS_BY_NAME[name].variable: text for name, text in given(0).items()}
    loaded = config.load([config.environment(environ)])
    [proxy] = loaded.proxies
    assert fields(proxy, expected(config.PROXY)) == expected(config.PROXY)
    assert loaded.metrics == SAMPLES["metrics"][2]
    options = parse([], environ)
    assert options["proxies"] == [proxy]
    assert options["metrics"] == SAMPLES["metrics"][2]


def test_every_setting_from_a_file(tmp_path):
    values = given(1)
    top = [name for name in values if config.SETTINGS_BY_NAME[name].scope == config.PROCESS]
    path = tmp_path / "proxy.toml"
    path.write_text(
        "".join("%s = %s\n" % (config.SETTINGS_BY_NAME[name].key, values[name]) for name in top)
        + "[[proxy]]\n"
        + "".join("%s = %s\n" % (config.SETTINGS_BY_NAME[name].key, value)
                  for name, value in values.items() if name not in top)
    )
    read = config.readFile(str(path))
    [proxy] = read.proxies
    assert fields(proxy, expected(config.PROXY)) == expected(config.PROXY)
    assert read.metrics == SAMPLES["metrics"][2]


def test_every_setting_from_python():
    values = {name: value for name, value in given(0).items()
              if config.SETTINGS_BY_NAME[name].scope == config.PROXY}
    proxy = config.build(environ={}, **values)
    assert fields(proxy, expected(config.PROXY)) == expected(config.PROXY)


def test_secret_file_everywhere(tmp_path):
    path = tmp_path / "secret"
    path.write_text("from-file\n")
    single = ["--jid", COMPONENT, "--target", TARGET]
    [proxy] = parse(single + ["--secret-file", str(path)])["proxies"]
    assert proxy.secret == "from-file"
    [proxy] = parse(single, {"CLIENT_PROXY_SECRET_FILE": str(path)})["proxies"]
    assert proxy.secret == "from-file"


# The command line and the environment: one surface, the command line winning.


def test_the_command_line_wins_over_the_environment(tmp_path):
    path = tmp_path / "secret"
    path.write_text("from-file\n")
    environ = {"CLIENT_PROXY_JID": "other.example.org", "CLIENT_PROXY_TARGET": TARGET,
               "CLIENT_PROXY_SECRET": "from-env", "CLIENT_PROXY_TIMEOUT": "-1",
               "CLIENT_PROXY_METRICS": "tcp:9100:interface=127.0.0.1"}
    options = parse(["--jid", COMPONENT, "--timeout", "5", "--secret-file", str(path),
                     "--metrics", "tcp:9200:interface=127.0.0.1"], environ)
    [proxy] = options["proxies"]
    assert (proxy.jid, proxy.target, proxy.timeout, proxy.secret) == (
        COMPONENT, TARGET, 5.0, "from-file")
    assert options["metrics"] == "tcp:9200:interface=127.0.0.1"


@pytest.mark.parametrize(
    "args, environ, message",
    [
        (["--jid", COMPONENT, "--target", TARGET, "--timeout", "-1", "--secret", "s"], {},
         "client-proxy: --timeout must be positive, not '-1'"),
        ([], {"CLIENT_PROXY_JID": COMPONENT, "CLIENT_PROXY_TARGET": TARGET,
              "CLIENT_PROXY_SECRET": "s", "CLIENT_PROXY_TIMEOUT": "-1"},
         "client-proxy: CLIENT_PROXY_TIMEOUT must be positive, not '-1'"),
        (["--jid", COMPONENT, "--target", TARGET, "--secret", "s", "--secret-file", "/x"], {},
         "client-proxy: give --secret-file or --secret, not both"),
        (["--jid", COMPONENT, "--target", TARGET, "--secret", "s"],
         {"CLIENT_PROXY_ROUTE_BY_FEATURES": "maybe"},
         "client-proxy: CLIENT_PROXY_ROUTE_BY_FEATURES must be true or false, not 'maybe'"),
        (["--jid", COMPONENT, "--target", TARGET, "--secret", "s", "--drain-show", "gone"], {},
         "client-proxy: --drain-show 'gone' is not a presence show; choose one of away, chat, "
         "dnd, xa"),
        (["--jid", COMPONENT, "--target", TARGET], {"CLIENT_PROXY_SECRET": "s",
                                                    "CLIENT_PROXY_SECRET_FILE": "/x"},
         "client-proxy: give CLIENT_PROXY_SECRET_FILE or CLIENT_PROXY_SECRET, not both"),
        (["--target", TARGET, "--secret", "s"], {},
         "client-proxy: the component JID is missing: give --jid or set CLIENT_PROXY_JID"),
        (["--jid", COMPONENT, "--target", TARGET], {},
         "client-proxy: the component secret is missing: give --secret-file or --secret or "
         "set CLIENT_PROXY_SECRET_FILE or set CLIENT_PROXY_SECRET"),
        (["--jid", COMPONENT, "--target", "s@" + COMPONENT, "--secret", "s"], {},
         "client-proxy: --target 's@proxy.example.org' is an account of the component's own "
         "domain proxy.example.org"),
        (["--jid", COMPONENT, "--colour", "blue"], {},
         "client-proxy: option --colour not recognized (see twistd client-proxy --help)"),
        (["--jid", COMPONENT, "--target", TARGET, "--secret", "s", "--route-by-features",
          "--no-route-by-features"], {},
         "client-proxy: --route-by-features and --no-route-by-features together (see twistd "
         "client-proxy --help)"),
    ],
)
def test_an_error_is_one_line_naming_the_setting_as_given(args, environ, message):
    with pytest.raises(SystemExit) as raised:
        parse(args, environ)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_a_file_and_settings_of_a_proxy_do_not_mix(tmp_path):
    path = tmp_path / "proxy.toml"
    path.write_text('[[proxy]]\njid = "%s"\ntarget = "%s"\nsecret = "s"\n' % (COMPONENT, TARGET))
    with pytest.raises(SystemExit, match="not with CLIENT_PROXY_JID$"):
        parse(["--config", str(path)], {"CLIENT_PROXY_JID": COMPONENT})
    with pytest.raises(config.ConfigError, match="not with CLIENT_PROXY_TIMEOUT$"):
        config.load([config.environment({"CLIENT_PROXY_CONFIG": str(path),
                                         "CLIENT_PROXY_TIMEOUT": "5"})])
    [proxy] = parse([], {"CLIENT_PROXY_CONFIG": str(path)})["proxies"]
    assert proxy.jid == COMPONENT


# Checking touches nothing.

CHECK_ONLY = """
import json, os, sys
from client_proxy import config

config.load([config.environment()])  # once for the modules it imports
opened = []

def hook(event, args):
    if event == "open" or event.startswith("sqlite3"):
        opened.append(str(args[0]) if event == "open" else event)

sys.addaudithook(hook)
config.load([config.environment()])
print(json.dumps({"opened": opened, "reactor": "twisted.internet.reactor" in sys.modules}))
"""


def test_checking_opens_no_file_or_database_and_no_reactor(tmp_path):
    """
    Checking a configuration reads the file and the secret file, and
    nothing else: the state file is checked by its permissions, the
    endpoints without a reactor.
    """
    (tmp_path / "secret").write_text("s\n")
    (tmp_path / "state.db").write_text("")
    path = tmp_path / "proxy.toml"
    path.write_text(textwrap.dedent("""\
        metrics = "tcp:9100:interface=127.0.0.1"
        state_file = "state.db"
        [[proxy]]
        jid = "proxy.example.org"
        target = "s@example.org"
        secret_file = "secret"
        endpoint = "tcp:host=127.0.0.1:port=5347"
        instance_jid = "me.example.org"
        instance_endpoint = "unix:path=/run/xmpp.sock"
        """))
    done = subprocess.run(
        [sys.executable, "-c", CHECK_ONLY],
        env=dict(os.environ, CLIENT_PROXY_CONFIG=str(path)),
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    result = json.loads(done.stdout)
    assert result["opened"] == [str(path), str(tmp_path / "secret")]
    assert result["reactor"] is False


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_state_file(tmp_path):
    (tmp_path / "state.db").write_text("")
    (tmp_path / "state.db").chmod(0o400)
    with pytest.raises(config.ConfigError, match="cannot be read and written"):
        build(stateFile=str(tmp_path / "state.db"))
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(config.ConfigError, match="is read-only"):
            build(stateFile=str(tmp_path / "new.db"))
    finally:
        tmp_path.chmod(0o700)


def test_a_state_file_that_is_no_database_stops_the_start(tmp_path):
    """
    The database is opened when the service is made: a file that is not
    one ends the start with one line.
    """
    garbage = tmp_path / "garbage"
    garbage.write_text("not a database, " * 100)
    proxy = build(stateFile=str(garbage))
    with pytest.raises(SystemExit) as raised:
        makeProcessService(process(proxy), [])
    assert str(raised.value).startswith("client-proxy: ")
    assert str(garbage) in str(raised.value) and "\n" not in str(raised.value)


# Warnings at start-up.


def process(*proxies, metrics=None):
    return config.ProcessConfig(tuple(proxies), metrics)


def test_no_warning_for_a_private_set_up():
    local = build(endpoint="tcp:host=127.0.0.1:port=5347")
    assert config.startupWarnings(process(local, metrics="tcp:9100:interface=127.0.0.1")) == []
    others = [build(endpoint=e) for e in ("tcp:localhost:5347", "tcp:host=\\:\\:1:port=5347",
                                         "unix:path=/run/x", "tls:host=xmpp.example.org:port=5223")]
    assert config.startupWarnings(process(*others, metrics="unix:/run/metrics")) == []


def test_warnings():
    remote = build(endpoint="tcp:host=xmpp.example.org:port=5347", secret="hunter2",
                   instanceJid="me.example.org", instanceEndpoint="tcp:10.0.0.1:5347")
    warnings = config.startupWarnings(process(remote, metrics="tcp:9100"), True)
    assert len(warnings) == 4
    assert warnings[0].startswith("--secret puts the component secret on the command line")
    assert warnings[1].startswith(
        "proxy.example.org: the endpoint tcp:host=xmpp.example.org:port=5347 is plain TCP")
    assert "tcp:10.0.0.1:5347" in warnings[2]
    assert warnings[3].startswith("the metrics endpoint tcp:9100 is not on loopback")
    assert not any("hunter2" in w for w in warnings)


def test_the_options_carry_the_warnings():
    options = parse(["--jid", COMPONENT, "--target", TARGET, "--secret", "s",
                     "--metrics", "tcp:9100:interface=0.0.0.0"])
    assert [w.split()[0] for w in options["warnings"]] == ["--secret", "the"]
