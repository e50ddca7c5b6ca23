"""
The configuration of the proxies, checked before anything connects: one
proxy from the command line or the environment (L{build},
L{fromEnvironment}), or any number from a TOML file (L{loadFile}).

Every check raises L{ConfigError} with a message naming the setting at
fault; callers turn it into a usage error or a plain exit, never a
traceback. The secret never appears in a message or a C{repr}.
"""

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from twisted.words.protocols.jabber.jid import InvalidFormat, JID

from client_proxy.contacts import IN_MEMORY, StateFileError, Subscribers
from client_proxy.dispatch import STRATEGIES

DEFAULT_ENDPOINT = "tcp:host=127.0.0.1:port=5347"


class ConfigError(Exception):
    """
    A setting is missing or malformed; the message says which and why.

    @ivar detail: the message without the name of the setting at its start
        (C{"must be positive, not -1"} for C{"the timeout must be positive,
        not -1"}), for callers that name the setting their own way.
    @ivar key: the parameter of L{build} at fault (C{"timeout"},
        C{"secretFile"}...), or C{None} if not known.
    """

    def __init__(self, message: str, detail: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.detail = message if detail is None else detail
        self.key = key


def _invalid(name: str, detail: str) -> ConfigError:
    """
    The error for the setting called C{name}: C{detail} says what is wrong.
    """
    return ConfigError("%s %s" % (name, detail), detail)


@dataclass(frozen=True)
class ProxyConfig:
    """
    The settings of one proxy.

    @ivar jid: the component's JID (a domain, e.g. C{proxy.example.org}).
    @ivar secret: the component secret shared with the server (XEP-0114).
    @ivar target: the bare JID of the implementing client's account.
    @ivar endpoint: a Twisted client endpoint string for the server's
        component port.
    @ivar timeout: seconds a request may wait for its answer.
    @ivar keepalive: seconds between two pings of the server; a ping still
        unanswered at the next one drops the connection.
    @ivar standbyInterval: seconds between two tries to take over while
        another connection serves the component's JID.
    @ivar maxInFlightPerRequester: requests one requester may have in
        flight.
    @ivar maxInFlight: requests all requesters together may have in flight.
    @ivar strategy: the name of the dispatch strategy.
    @ivar instanceJid: a component JID of this instance's own, for a pool
        of instances sharing C{jid} on a server that spreads its stanzas
        over them (see L{client_proxy.service}); C{None} for none.
    @ivar instanceEndpoint: where the instance JID's connection goes, if not
        to C{endpoint} (ejabberd routes to a connection the stanzas of every
        host of its listener: the instance JID needs a listener alone).
    @ivar stateFile: the SQLite database of the users subscribed to the
        component's presence, or C{None} to keep them in memory only
        (forgotten at every restart).
    """

    jid: str
    secret: str = field(repr=False)
    target: str
    endpoint: str = DEFAULT_ENDPOINT
    timeout: float = 30.0
    keepalive: float = 60.0
    standbyInterval: float = 2.0
    maxInFlightPerRequester: int = 1000
    maxInFlight: int = 100_000
    strategy: str = "random"
    stateFile: str | None = None
    instanceJid: str | None = None
    instanceEndpoint: str | None = None


def _parseJID(value: str | None, name: str) -> JID:
    if not value:
        raise _invalid(name, "is missing")
    try:
        return JID(value)
    except InvalidFormat as e:
        raise _invalid(name, "%r is not a valid JID: %s" % (value, e))
    except Exception:
        # Twisted's stringprep raises IndexError, not InvalidFormat, for an
        # empty label in a domain (a..b).
        raise _invalid(name, "%r is not a valid JID" % (value,))


def componentJID(value: str | None, name: str = "the component JID") -> str:
    """
    Check a component's JID: a domain, with neither localpart nor resource.
    """
    parsed = _parseJID(value, name)
    if parsed.user is not None or parsed.resource is not None:
        raise _invalid(name, "%r must be a bare domain such as proxy.example.org" % (value,))
    return parsed.full()


def instanceJID(value: str, shared: str, name: str = "the instance JID") -> str:
    """
    Check an instance's own component JID: a domain other than the shared
    one.
    """
    value = componentJID(value, name)
    if value == shared:
        raise ConfigError(
            "%s %r must differ from the component JID it stands in for" % (name, value),
            "must differ from the component JID",
        )
    return value


def targetJID(value: str | None, name: str = "the target") -> str:
    """
    Check the target: an account's bare JID, C{user@domain}.
    """
    parsed = _parseJID(value, name)
    if parsed.user is None:
        raise _invalid(name, "%r must be an account, user@domain" % (value,))
    if parsed.resource is not None:
        raise _invalid(
            name, "%r must be a bare JID: it stands for all the account's resources" % (value,)
        )
    return parsed.full()


def readSecret(path: str) -> str:
    """
    Read a component secret from a file: its first line, without the
    line break.
    """
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.readline().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            "cannot read the secret file %s: %s" % (path, getattr(e, "strerror", e))
        )
    if not secret:
        raise ConfigError("the secret file %s is empty" % (path,))
    return secret


def _checkEndpointString(value: str | None, name: str, server: bool) -> str:
    """
    Check that an endpoint string parses; nothing connects or listens yet.
    """
    from twisted.internet import endpoints, reactor

    if not value:
        raise _invalid(name, "is missing")
    try:
        if server:
            endpoints.serverFromString(reactor, value)
        else:
            endpoints.clientFromString(reactor, value)
    except Exception as e:
        kind = "as a server endpoint (such as tcp:9100:interface=127.0.0.1)" if server else ""
        raise _invalid(name, "%r does not parse%s: %s" % (value, kind and " " + kind, e))
    return value


def checkEndpoint(value: str | None, name: str = "the endpoint") -> str:
    """
    Check a client endpoint string, such as C{tcp:host=...:port=...}.
    """
    return _checkEndpointString(value, name, server=False)


def checkServerEndpoint(value: str | None, name: str = "the metrics endpoint") -> str:
    """
    Check a server endpoint string, such as C{tcp:9100:interface=...}.
    """
    return _checkEndpointString(value, name, server=True)


def number(value: object, name: str, kind: type = float) -> float:
    """
    Check a positive, finite number; C{kind} is C{int} or C{float}.
    """
    try:
        parsed = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise _invalid(name, "%r is not %s" % (value, "an integer" if kind is int else "a number"))
    if kind is float and not math.isfinite(parsed):
        raise _invalid(name, "must be a finite number, not %r" % (value,))
    if parsed <= 0:
        raise _invalid(name, "must be positive, not %r" % (value,))
    return parsed


def strategy(value: str, name: str = "the strategy") -> str:
    if value not in STRATEGIES:
        raise _invalid(
            name, "%r is unknown; choose one of %s" % (value, ", ".join(sorted(STRATEGIES)))
        )
    return value


def checkStateFile(value: str, name: str = "the state file") -> str | None:
    """
    Check the subscriber database: its folder exists, and the file can be
    opened as an SQLite database and written (it is created if missing).

    @return: the absolute path, or C{None} for C{":memory:"} (no file).
    """
    if value == IN_MEMORY:
        return None
    path = os.path.abspath(os.path.expanduser(value))
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise _invalid(
            name, "%r cannot be created: the directory %s does not exist" % (value, folder)
        )
    if os.path.isdir(path):
        raise _invalid(name, "%r is a directory, not a file" % (value,))
    try:
        Subscribers(path).close()
    except StateFileError as e:
        raise _invalid(name, "%r cannot be opened: %s" % (value, e.__cause__ or e))
    return path


def _given(value: object) -> bool:
    """
    Whether a setting was given: C{None} and the empty string stand for
    "use the default" (an empty environment variable, an option left out).
    """
    return value is not None and value != ""


def _checked(key: str, check: Callable[..., object], *args: object):
    """
    Call C{check(*args)}; a L{ConfigError} it raises is marked as the fault
    of L{build}'s parameter C{key}.
    """
    try:
        return check(*args)
    except ConfigError as e:
        if e.key is None:
            e.key = key
        raise


def build(
    jid: str | None,
    target: str | None,
    secret: str | None = None,
    secretFile: str | None = None,
    endpoint: str | None = None,
    timeout: object = None,
    keepalive: object = None,
    standbyInterval: object = None,
    maxInFlightPerRequester: object = None,
    maxInFlight: object = None,
    strategyName: str | None = None,
    stateFile: str | None = None,
    instanceJid: str | None = None,
    instanceEndpoint: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> ProxyConfig:
    """
    Check every setting and build a L{ProxyConfig}.

    A setting that is C{None} or empty takes its default. The secret comes
    from C{secret}, else from C{secretFile}, else from the environment:
    C{CLIENT_PROXY_SECRET}, then C{CLIENT_PROXY_SECRET_FILE}.

    @raise ConfigError: a setting is missing or malformed; its C{key} is the
        parameter at fault.
    """
    jid = _checked("jid", componentJID, jid)
    target = _checked("target", targetJID, target)
    if _given(secret):
        resolved = secret
    elif _given(secretFile):
        resolved = _checked("secretFile", readSecret, secretFile)
    elif environ.get("CLIENT_PROXY_SECRET"):
        resolved = environ["CLIENT_PROXY_SECRET"]
    elif environ.get("CLIENT_PROXY_SECRET_FILE"):
        resolved = _checked("secretFile", readSecret, environ["CLIENT_PROXY_SECRET_FILE"])
    else:
        raise ConfigError(
            "the component secret is missing: give a secret file, or set "
            "CLIENT_PROXY_SECRET_FILE or CLIENT_PROXY_SECRET",
            "is missing",
            "secret",
        )

    def orDefault(value: object, name: str) -> object:
        return value if _given(value) else getattr(ProxyConfig, name)

    return ProxyConfig(
        jid=jid,
        secret=resolved,
        target=target,
        endpoint=_checked("endpoint", checkEndpoint, endpoint or DEFAULT_ENDPOINT),
        timeout=_checked("timeout", number, orDefault(timeout, "timeout"), "the timeout"),
        keepalive=_checked(
            "keepalive", number, orDefault(keepalive, "keepalive"), "the keepalive interval"
        ),
        standbyInterval=_checked(
            "standbyInterval",
            number,
            orDefault(standbyInterval, "standbyInterval"),
            "the standby interval",
        ),
        maxInFlightPerRequester=_checked(
            "maxInFlightPerRequester",
            number,
            orDefault(maxInFlightPerRequester, "maxInFlightPerRequester"),
            "the limit of requests in flight per requester",
            int,
        ),
        maxInFlight=_checked(
            "maxInFlight",
            number,
            orDefault(maxInFlight, "maxInFlight"),
            "the limit of requests in flight",
            int,
        ),
        strategy=_checked("strategyName", strategy, orDefault(strategyName, "strategy")),
        stateFile=_optional("stateFile", checkStateFile, stateFile),
        instanceJid=_optional("instanceJid", instanceJID, instanceJid, jid),
        instanceEndpoint=_optional(
            "instanceEndpoint", checkEndpoint, instanceEndpoint, "the instance endpoint"
        ),
    )


def _optional(key: str, check: Callable[..., object], value: object, *args: object):
    """
    C{None} for a setting not given, else the setting checked as by
    L{_checked}.
    """
    return _checked(key, check, value, *args) if _given(value) else None


def fromEnvironment(environ: Mapping[str, str] = os.environ) -> ProxyConfig:
    """
    Build a L{ProxyConfig} from C{CLIENT_PROXY_*} variables, for proxy.tac.
    """
    return build(
        **{parameter: environ.get(name) for parameter, name in VARIABLES.items()},
        environ=environ,
    )


#: The variable for each parameter of L{build} that L{fromEnvironment}
#: reads; the secret's variables L{build} reads itself.
VARIABLES = {
    "jid": "CLIENT_PROXY_JID",
    "target": "CLIENT_PROXY_TARGET",
    "endpoint": "CLIENT_PROXY_ENDPOINT",
    "timeout": "CLIENT_PROXY_TIMEOUT",
    "keepalive": "CLIENT_PROXY_KEEPALIVE",
    "standbyInterval": "CLIENT_PROXY_STANDBY_INTERVAL",
    "maxInFlightPerRequester": "CLIENT_PROXY_MAX_IN_FLIGHT_PER_REQUESTER",
    "maxInFlight": "CLIENT_PROXY_MAX_IN_FLIGHT",
    "strategyName": "CLIENT_PROXY_STRATEGY",
    "stateFile": "CLIENT_PROXY_STATE_FILE",
    "instanceJid": "CLIENT_PROXY_INSTANCE_JID",
    "instanceEndpoint": "CLIENT_PROXY_INSTANCE_ENDPOINT",
}


# Configuration files: `twistd client-proxy --config proxy.toml`, or
# CLIENT_PROXY_CONFIG for proxy.tac. contrib/proxy.toml.example shows the
# format: top-level keys, then one [[proxy]] table per proxy.

#: The environment variable naming a configuration file, for proxy.tac.
CONFIG_VARIABLE = "CLIENT_PROXY_CONFIG"

#: The environment variable giving the metrics endpoint, for proxy.tac;
#: with a configuration file too, it wins over the file's C{metrics}.
METRICS_VARIABLE = "CLIENT_PROXY_METRICS"

#: The variables L{fromEnvironment} and L{build} read: settings of a single
#: proxy, which a configuration file replaces.
ENVIRONMENT_VARIABLES = (
    *VARIABLES.values(),
    "CLIENT_PROXY_SECRET",
    "CLIENT_PROXY_SECRET_FILE",
)


def _nonEmpty(value: str, name: str) -> str:
    if not value:
        raise _invalid(name, "is empty")
    return value


@dataclass(frozen=True)
class _Key:
    """
    A key of a configuration file.

    @ivar parameter: what the value becomes: a parameter of L{build} for
        the keys of a proxy, a field of L{FileConfig} for the others.
    @ivar types: the TOML types it takes (C{bool} is never an C{int}).
    @ivar check: C{check(value, key)} raises L{ConfigError} if the value is
        wrong and returns the value checked.
    @ivar topLevel: whether it may be given at the top level too, as the
        default of every proxy.
    @ivar secret: whether the value must never appear in a message.
    @ivar path: whether the value is a file name, relative to the folder of
        the configuration file.
    """

    parameter: str
    types: tuple[type, ...]
    check: Callable[[object, str], object]
    topLevel: bool = True
    secret: bool = False
    path: bool = False


#: The keys of a [[proxy]] table; those with C{topLevel} may be given at
#: the top level as defaults.
PROXY_KEYS: dict[str, _Key] = {
    "jid": _Key("jid", (str,), componentJID, topLevel=False),
    "target": _Key("target", (str,), targetJID, topLevel=False),
    "secret": _Key("secret", (str,), _nonEmpty, topLevel=False, secret=True),
    "secret_file": _Key("secretFile", (str,), lambda v, n: readSecret(v), path=True),
    "endpoint": _Key("endpoint", (str,), checkEndpoint),
    "timeout": _Key("timeout", (int, float), number),
    "keepalive": _Key("keepalive", (int, float), number),
    "standby_interval": _Key("standbyInterval", (int, float), number),
    "max_in_flight_per_requester": _Key(
        "maxInFlightPerRequester", (int,), lambda v, n: number(v, n, int)
    ),
    "max_in_flight": _Key("maxInFlight", (int,), lambda v, n: number(v, n, int)),
    "strategy": _Key("strategyName", (str,), strategy),
    "instance_jid": _Key("instanceJid", (str,), componentJID, topLevel=False),
    "instance_endpoint": _Key("instanceEndpoint", (str,), checkEndpoint, topLevel=False),
    "state_file": _Key("stateFile", (str,), checkStateFile, path=True),
}

#: Top-level keys that are settings of the whole process rather than
#: defaults of the proxies. To add one: a field of L{FileConfig} (with a
#: default), and an entry here whose C{parameter} is that field.
FILE_KEYS: dict[str, _Key] = {
    "metrics": _Key("metrics", (str,), checkServerEndpoint),
}


@dataclass(frozen=True)
class FileConfig:
    """
    The settings of a configuration file.

    @ivar proxies: one L{ProxyConfig} per [[proxy]] table, in order.
    @ivar metrics: the server endpoint string where the metrics are
        served, or C{None} for none.
    """

    proxies: tuple[ProxyConfig, ...]
    metrics: str | None = None


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a float",
    bool: "a boolean",
    list: "an array",
    dict: "a table",
}


def _typeName(value: object) -> str:
    return _TYPE_NAMES.get(type(value), "a " + type(value).__name__)


def _checkValue(key: str, spec: _Key, value: object, folder: str) -> object:
    """
    Check the type then the value of one key of the file.

    @return: the value for C{spec.parameter}.
    @raise ConfigError: its C{detail} says what is wrong, without the key.
    """
    if isinstance(value, bool) or not isinstance(value, spec.types):
        expected = "a number" if float in spec.types else _TYPE_NAMES[spec.types[0]]
        shown = "" if spec.secret or isinstance(value, (dict, list)) else " (%r)" % (value,)
        raise ConfigError(
            "%s must be %s" % (key, expected),
            "must be %s, not %s%s" % (expected, _typeName(value), shown),
        )
    if spec.path:
        value = os.path.join(folder, os.path.expanduser(value))
    spec.check(value, key)
    return value


def _checkTable(
    table: Mapping[str, object],
    keys: Mapping[str, _Key],
    folder: str,
    report: Callable[[str, str], None],
) -> dict[str, object]:
    """
    Check every key of C{table}; report each error as C{report(key,
    detail)}.

    @return: the parameter and value of every key that is right.
    """
    checked = {}
    for key, value in table.items():
        spec = keys.get(key)
        if spec is None:
            continue
        try:
            checked[spec.parameter] = _checkValue(key, spec, value, folder)
        except ConfigError as e:
            report(key, e.detail)
    return checked


def _proxyLabel(index: int, table: Mapping[str, object]) -> str:
    jid = table.get("jid")
    if isinstance(jid, str) and jid:
        return "[[proxy]] %d (%s)" % (index, jid)
    return "[[proxy]] %d" % (index,)


def readFile(path: str) -> FileConfig:
    """
    Read and check a configuration file.

    Every error is reported, each on a line of the L{ConfigError}'s message
    of the form C{FILE: [[proxy]] N (JID): KEY: what is wrong} (C{FILE: KEY:
    ...} for the top level), after a line counting them if there are
    several; secrets are never shown.

    @raise ConfigError: the file cannot be read, is not TOML, or holds a
        missing, unknown or malformed setting.
    """
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise ConfigError("%s: cannot read the configuration file: %s" % (path, e.strerror or e))
    except UnicodeDecodeError as e:
        raise ConfigError("%s: not a UTF-8 text file: %s" % (path, e))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("%s: not a valid TOML file: %s" % (path, e))

    folder = os.path.dirname(os.path.abspath(path))
    errors: list[str] = []

    def reporter(where: str) -> Callable[[str, str], None]:
        prefix = "%s: %s" % (path, where) if where else path
        return lambda key, detail: errors.append("%s: %s: %s" % (prefix, key, detail))

    # The top level: settings of the process, and defaults of the proxies.
    topLevel = reporter("")
    defaultKeys = {key: spec for key, spec in PROXY_KEYS.items() if spec.topLevel}
    for key in document:
        if key == "proxy" or key in FILE_KEYS or key in defaultKeys:
            continue
        if key in PROXY_KEYS:
            topLevel(key, "belongs in a [[proxy]] table, not at the top level")
        else:
            topLevel(
                key,
                "unknown key; the top level takes: %s"
                % ", ".join(sorted(["proxy", *FILE_KEYS, *defaultKeys])),
            )
    fileSettings = _checkTable(document, FILE_KEYS, folder, topLevel)
    defaults = _checkTable(document, defaultKeys, folder, topLevel)

    tables = document.get("proxy")
    if tables is None or tables == []:
        errors.append("%s: no [[proxy]] table: give one per proxy" % (path,))
        tables = []
    elif not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        topLevel(
            "proxy",
            "must be [[proxy]] tables, one per proxy, not %s" % (_typeName(tables),),
        )
        tables = []

    topLevelErrors = len(errors)
    proxies: list[ProxyConfig] = []
    jids: dict[str, int] = {}
    fileKeys = {spec.parameter: key for key, spec in PROXY_KEYS.items()}
    for index, table in enumerate(tables, 1):
        label = _proxyLabel(index, table)
        report = reporter(label)
        count = len(errors)
        for key in table:
            if key not in PROXY_KEYS:
                report(
                    key,
                    "unknown key; a [[proxy]] table takes: %s" % ", ".join(sorted(PROXY_KEYS)),
                )
        settings = _checkTable(table, PROXY_KEYS, folder, report)
        for key in ("jid", "target"):
            if key not in table:
                report(key, "is missing")
        if "secret" in table and "secret_file" in table:
            report("secret", "give secret or secret_file, not both")
        elif "secret" not in table and "secret_file" not in table and "secret_file" not in document:
            report(
                "secret_file",
                "is missing: give secret_file (or secret) in the [[proxy]] table, "
                "or secret_file at the top level",
            )
        if "jid" in settings:
            jid = componentJID(settings["jid"])
            if jid in jids:
                report(
                    "jid",
                    "%r is already the jid of [[proxy]] %d: two proxies cannot share a jid"
                    % (jid, jids[jid]),
                )
            else:
                jids[jid] = index
        if len(errors) > count or topLevelErrors:
            # Build only what is known right: a default at fault would be
            # reported again for every proxy.
            continue
        parameters = dict(defaults)
        if "secret" in settings:
            parameters.pop("secretFile", None)
        parameters.update(settings)
        try:
            proxies.append(build(environ={}, **parameters))
        except ConfigError as e:
            report(fileKeys.get(e.key, "?"), e.detail)

    if len(errors) > 1:
        raise ConfigError("%d errors in %s:\n%s" % (len(errors), path, "\n".join(errors)))
    if errors:
        raise ConfigError(errors[0])
    return FileConfig(proxies=tuple(proxies), **fileSettings)


def loadFile(path: str) -> list[ProxyConfig]:
    """
    The proxies of a configuration file (see L{readFile}).

    @raise ConfigError: as L{readFile}.
    """
    return list(readFile(path).proxies)


def proxiesFromEnvironment(environ: Mapping[str, str] = os.environ) -> list[ProxyConfig]:
    """
    The proxies for proxy.tac: those of the file named by
    C{CLIENT_PROXY_CONFIG}, else the one proxy of L{fromEnvironment}.

    @raise ConfigError: as L{readFile} or L{fromEnvironment}, or both a file
        and single-proxy variables are given.
    """
    path = environ.get(CONFIG_VARIABLE)
    if not path:
        return [fromEnvironment(environ)]
    clash = [name for name in ENVIRONMENT_VARIABLES if environ.get(name)]
    if clash:
        raise ConfigError(
            "%s names a configuration file, which holds the settings of the "
            "proxies: unset %s" % (CONFIG_VARIABLE, ", ".join(clash))
        )
    return loadFile(path)


def metricsFromEnvironment(environ: Mapping[str, str] = os.environ) -> str | None:
    """
    The metrics endpoint for proxy.tac: C{CLIENT_PROXY_METRICS}, else the
    C{metrics} of the file named by C{CLIENT_PROXY_CONFIG}, else C{None}.

    @raise ConfigError: the endpoint does not parse, or as L{readFile}.
    """
    value = environ.get(METRICS_VARIABLE)
    if value:
        return checkServerEndpoint(value, METRICS_VARIABLE)
    path = environ.get(CONFIG_VARIABLE)
    if path:
        return readFile(path).metrics
    return None
