"""
Checking the configuration.
"""

import pytest

from client_proxy import config


def build(**kw):
    settings = dict(jid="proxy.example.org", target="service@example.org", secret="s")
    settings.update(kw)
    return config.build(environ={}, **settings)


def test_defaults():
    c = build()
    assert (c.jid, c.target, c.endpoint) == (
        "proxy.example.org",
        "service@example.org",
        config.DEFAULT_ENDPOINT,
    )
    assert c.timeout == 30


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
        (dict(strategy_name="fastest"), None),
    ],
)
def test_errors_name_the_setting(settings, message):
    if "strategy_name" in settings:
        settings = {"strategyName": settings.pop("strategy_name")}
        message = "strategy 'fastest' is unknown"
    with pytest.raises(config.ConfigError, match=message):
        build(**settings)


def test_secret_sources(tmp_path):
    path = tmp_path / "secret"
    path.write_text("from-file\n")
    assert build(secret=None, secretFile=str(path)).secret == "from-file"
    env = {"CLIENT_PROXY_SECRET_FILE": str(path)}
    assert config.build("proxy.example.org", "s@example.org", environ=env).secret == "from-file"
    env = {"CLIENT_PROXY_SECRET": "from-env"}
    assert config.build("proxy.example.org", "s@example.org", environ=env).secret == "from-env"
    with pytest.raises(config.ConfigError, match="secret is missing"):
        config.build("proxy.example.org", "s@example.org", environ={})


def test_unreadable_or_empty_secret_file(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read the secret file"):
        build(secret=None, secretFile=str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(config.ConfigError, match="is empty"):
        build(secret=None, secretFile=str(empty))


def test_from_environment(tmp_path):
    c = config.fromEnvironment(
        {
            "CLIENT_PROXY_JID": "proxy.example.org",
            "CLIENT_PROXY_TARGET": "service@example.org",
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
    ],
)
def test_errors_carry_the_key(settings, key, detail):
    """
    An error says which parameter is at fault, and what is wrong without
    the setting's name, for callers that name it their own way.
    """
    with pytest.raises(config.ConfigError) as raised:
        build(**settings)
    assert raised.value.key == key
    assert raised.value.detail.startswith(detail)


def test_empty_means_default():
    c = build(timeout="", endpoint="", strategyName="", maxInFlight=None)
    assert (c.timeout, c.endpoint, c.strategy) == (30.0, config.DEFAULT_ENDPOINT, "random")


@pytest.mark.parametrize("settings", [dict(jid="proxy..example.org"), dict(target="s@example..org")])
def test_jids_stringprep_cannot_read_are_errors_not_tracebacks(settings):
    with pytest.raises(config.ConfigError, match="not a valid JID"):
        build(**settings)


def test_a_huge_integer_limit_is_accepted():
    assert build(maxInFlight=str(10**400)).maxInFlight == 10**400
