"""
The configuration of the proxies, checked before anything connects.

Every setting is declared once, in L{SETTINGS}: its name, where its value
goes, its check, its default and its help. From that one declaration come
the command line's options (L{client_proxy.tap}), the environment's
C{CLIENT_PROXY_*} variables, the keys of a TOML configuration file
(L{readFile}), the C{--help} text and the option reference in
C{docs/options.rst} (L{reference}). Adding a setting is one L{Setting} in
L{SETTINGS}, a field of L{ProxyConfig} (or L{ProcessConfig}) of the same
name, and its use.

The ways in: L{build} for Python callers (one proxy); L{load} for the
command line and the environment, the command line winning, with
C{--config} / C{CLIENT_PROXY_CONFIG} naming a file that describes any
number of proxies.

Checking opens no file but the secret file and the configuration file
(their contents are the values), opens no database and does not touch
the reactor. Every check raises L{ConfigError} with a message naming the
setting at fault as the caller gave it (C{--timeout},
C{CLIENT_PROXY_TIMEOUT}, C{timeout}); callers turn it into one line and a
non-zero exit, never a traceback. The secret never appears in a message or
a C{repr}.
"""

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from twisted.internet import endpoints
from twisted.internet.testing import MemoryReactor
from twisted.words.protocols.jabber.jid import InvalidFormat, JID

from client_proxy.store import IN_MEMORY
from client_proxy.dispatch import STRATEGIES
from client_proxy.inflight import DEFAULT_MAX_RETAINED_BYTES
from client_proxy.logs import LOG_FORMATS
from client_proxy.routing import DEFAULT_MAX_STANZA_SIZE

DEFAULT_ENDPOINT = "tcp:host=127.0.0.1:port=5347"


class ConfigError(Exception):
    """
    A setting is missing or malformed; the message says which and why.

    @ivar detail: the message without the name of the setting at its start
        (C{"must be positive, not -1"} for C{"--timeout must be positive,
        not -1"}), for callers that name the setting their own way.
    @ivar key: the name of the L{Setting} at fault (C{"timeout"},
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
    The settings of one proxy, checked: made by L{build}, L{load} or
    L{readFile}. Each field is the value of the L{Setting} of the same
    name (see L{SETTINGS} for their meaning and defaults).

    @ivar jid: the component's JID (a domain, e.g. C{proxy.example.org}).
    @ivar secret: the component secret shared with the server (XEP-0114),
        from the setting C{secret} or read from C{secretFile}.
    @ivar target: the bare JID of the implementing client's account.
    @ivar endpoint: a Twisted client endpoint string for the server's
        component port.
    @ivar timeout: seconds a request may wait for its answer.
    @ivar keepalive: seconds between two pings of the server.
    @ivar standbyInterval: seconds between two tries to take over while
        another connection serves the component's JID.
    @ivar maxInFlightPerRequester: requests one requester (a bare JID) may
        have in flight.
    @ivar maxInFlightPerDomain: requests the requesters of one domain
        together may have in flight (resolved: never C{None}).
    @ivar maxInFlight: requests all requesters together may have in flight.
    @ivar maxRetainedBytes: bytes of requests kept for a retry, in all.
    @ivar maxStanzaSize: bytes of the largest stanza the component sends.
    @ivar maxSubscribers: users the component keeps as subscribers.
    @ivar maxSubscribersPerDomain: subscribers of one domain.
    @ivar allow: bare JIDs and domains that may use the proxy; empty for
        everyone.
    @ivar deny: bare JIDs and domains that may not; wins over C{allow}.
    @ivar strategy: the name of the dispatch strategy.
    @ivar drainShow: the presence show that marks a resource draining.
    @ivar routeByFeatures: whether a request goes only to resources that
        advertise the namespace of its payload (XEP-0115).
    @ivar stateFile: the SQLite database of the subscribers, or C{None} to
        keep them in memory only.
    @ivar instanceJid: a component JID of this instance's own, or C{None}.
    @ivar instanceEndpoint: where the instance JID's connection goes, if
        not to C{endpoint}.
    """

    jid: str
    secret: str = field(repr=False)
    target: str
    endpoint: str
    timeout: float
    keepalive: float
    standbyInterval: float
    maxInFlightPerRequester: int
    maxInFlightPerDomain: int
    maxInFlight: int
    maxRetainedBytes: int
    maxStanzaSize: int
    maxSubscribers: int
    maxSubscribersPerDomain: int
    allow: tuple[str, ...]
    deny: tuple[str, ...]
    strategy: str
    drainShow: str
    routeByFeatures: bool
    stateFile: str | None
    instanceJid: str | None
    instanceEndpoint: str | None


@dataclass(frozen=True)
class ProcessConfig:
    """
    The settings of the whole process.

    @ivar proxies: one L{ProxyConfig} per proxy, in order.
    @ivar metrics: the server endpoint string where the metrics are
        served, or C{None} for none.
    @ivar logFormat: how log lines are written: C{text} or C{json} (see
        L{client_proxy.logs}).
    """

    proxies: tuple[ProxyConfig, ...]
    metrics: str | None = None
    logFormat: str = "text"


# Checks: each takes the value given (a string from the command line or the
# environment, or a value of the TOML type the setting takes) and the name
# to give the setting in a message, and returns the value checked.

Check = Callable[[Any, str], Any]


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


def jidList(value: str | Iterable[object], name: str) -> tuple[str, ...]:
    """
    Check a list of bare JIDs (C{user@example.org}) and domains
    (C{example.org}): comma-separated in a string, or a sequence of
    strings. Each is normalised by stringprep, as the server writes the
    addresses it routes (RFC 6120, 8.1.1).
    """
    entries = value.split(",") if isinstance(value, str) else list(value)
    checked = []
    for entry in entries:
        if not isinstance(entry, str):
            raise _invalid(name, "must hold strings, not %r" % (entry,))
        entry = entry.strip()
        if not entry:
            continue
        parsed = _parseJID(entry, name)
        if parsed.resource is not None:
            raise _invalid(
                name, "%r must be a bare JID or a domain, without a resource" % (entry,)
            )
        checked.append(parsed.full())
    return tuple(dict.fromkeys(checked))


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
    Check that an endpoint string parses; nothing connects or listens.

    Twisted parses an endpoint string only while building the endpoint,
    which takes a reactor. The endpoint built here is thrown away, and its
    constructor only keeps the reactor (a C{tls:} one asks it for its name
    resolver), so it gets a L{MemoryReactor}, which records what it is
    asked and does nothing. Not the global reactor: importing it installs
    the default one, and a configuration is checked before the application
    has chosen its reactor (twistd's C{--reactor}, or an application that
    checks its settings first).

    Twisted's parser of a C{tls:} endpoint reads the certificates its
    C{trustRoots}, C{certificate} and C{privateKey} name: like the secret
    file, they are the value.
    """
    if not value:
        raise _invalid(name, "is missing")
    try:
        if server:
            endpoints.serverFromString(MemoryReactor(), value)
        else:
            endpoints.clientFromString(MemoryReactor(), value)
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


def number(value: object, name: str, kind: type = float, minimum: float | None = None) -> Any:
    """
    Check a positive, finite number; C{kind} is C{int} or C{float}.

    @param minimum: the least value allowed, if more than any positive one.
    """
    try:
        parsed = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise _invalid(name, "%r is not %s" % (value, "an integer" if kind is int else "a number"))
    if kind is float and not math.isfinite(parsed):
        raise _invalid(name, "must be a finite number, not %r" % (value,))
    if parsed <= 0:
        raise _invalid(name, "must be positive, not %r" % (value,))
    if minimum is not None and parsed < minimum:
        raise _invalid(name, "must be at least %s, not %r" % (minimum, value))
    return parsed


def _positive(kind: type = float, minimum: float | None = None) -> Check:
    return lambda value, name: number(value, name, kind, minimum)


def strategy(value: str, name: str = "the strategy") -> str:
    if value not in STRATEGIES:
        raise _invalid(
            name, "%r is unknown; choose one of %s" % (value, ", ".join(sorted(STRATEGIES)))
        )
    return value


#: The values of a presence's show (RFC 6121, 4.7.2.1).
SHOWS = ("away", "chat", "dnd", "xa")


def show(value: str, name: str = "the drain show") -> str:
    if value not in SHOWS:
        raise _invalid(
            name, "%r is not a presence show; choose one of %s" % (value, ", ".join(SHOWS))
        )
    return value


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def boolean(value: object, name: str) -> bool:
    """
    Check a switch: C{True} or C{False} in a file, in Python, or as a flag
    given on the command line; in the environment, C{true}, C{yes}, C{on}
    or C{1}, or C{false}, C{no}, C{off} or C{0}.
    """
    if isinstance(value, bool):
        return value
    if value == 1:  # a flag given on the command line
        return True
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise _invalid(name, "must be true or false, not %r" % (value,))


def checkStateFile(value: str, name: str = "the state file") -> str | None:
    """
    Check the subscriber database with the file system's permissions
    only: its folder exists and can be written (SQLite writes its journal
    beside the file), and the file, if it exists, can be read and written.
    The database itself is opened when the proxy starts.

    @return: the absolute path, or C{None} for C{":memory:"} (no file).
    """
    if value == IN_MEMORY:
        return None
    path = os.path.abspath(os.path.expanduser(value))
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise _invalid(name, "%r is a directory, not a file" % (value,))
    if not os.path.isdir(folder):
        raise _invalid(
            name, "%r cannot be created: the directory %s does not exist" % (value, folder)
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _invalid(name, "%r cannot be written: the directory %s is read-only" % (value, folder))
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise _invalid(name, "%r cannot be read and written: permission denied" % (value,))
    return path


def logFormat(value: str, name: str = "the log format") -> str:
    if value not in LOG_FORMATS:
        raise _invalid(name, "%r is unknown; choose %s" % (value, " or ".join(LOG_FORMATS)))
    return value


def _nonEmpty(value: str, name: str) -> str:
    if not value:
        raise _invalid(name, "is empty")
    return value


# The settings.

#: Where a setting's value goes: a field of L{ProxyConfig}, a field of
#: L{ProcessConfig}, or the configuration file that describes the proxies.
PROXY, PROCESS, FILE = "proxy", "process", "file"

#: The TOML types of a number, an integer, a string, an array and a
#: boolean.
NUMBER, INTEGER, STRING, ARRAY, BOOLEAN = (int, float), (int,), (str,), (list,), (bool,)


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", name).lower()


@dataclass(frozen=True)
class Setting:
    """
    One setting, declared once: everything else is derived from it.

    @ivar name: its name in Python: a parameter of L{build}, and the field
        of L{ProxyConfig} or L{ProcessConfig} it fills. The key in a file
        (C{max_in_flight}), the option (C{--max-in-flight}) and the
        environment variable (C{CLIENT_PROXY_MAX_IN_FLIGHT}) are made from
        it.
    @ivar scope: L{PROXY}, L{PROCESS} or L{FILE}.
    @ivar check: C{check(value, name)} raises L{ConfigError} if the value
        is wrong, naming the setting C{name}, and returns it checked.
    @ivar label: the setting in words, for a message that it is missing.
    @ivar help: what it means, for C{--help} and the reference.
    @ivar default: the value when it is not given.
    @ivar defaultText: the default in words, where the value alone would
        not say it.
    @ivar types: the TOML types it takes (C{bool} is never an C{int}).
    @ivar field: the field it fills, if not the one of its name: settings
        that fill the same field are ways to give one value, of which
        only one may be given in one place.
    @ivar required: whether its field must be given.
    @ivar topLevel: for a setting of a proxy, whether a file may give it
        at the top level too, as the default of every proxy.
    @ivar secret: whether the value must never appear in a message.
    @ivar path: whether the value is a file name, relative to the folder of
        the configuration file that gives it.
    """

    name: str
    scope: str
    check: Check
    label: str
    help: str
    default: object = None
    defaultText: str | None = None
    types: tuple[type, ...] = STRING
    field: str = ""
    required: bool = False
    topLevel: bool = True
    secret: bool = False
    path: bool = False

    def __post_init__(self) -> None:
        if not self.field:
            object.__setattr__(self, "field", self.name)

    @property
    def key(self) -> str:
        """Its key in a configuration file."""
        return _snake(self.name)

    @property
    def option(self) -> str:
        """Its long option on the command line, without the dashes."""
        return self.key.replace("_", "-")

    @property
    def variable(self) -> str:
        """Its environment variable."""
        return "CLIENT_PROXY_" + self.key.upper()

    @property
    def flag(self) -> bool:
        """Whether it is a switch: a flag without a value on the command line."""
        return self.types == BOOLEAN

    @property
    def inFile(self) -> bool:
        """Whether a configuration file may give it."""
        return self.scope != FILE

    def describeDefault(self) -> str:
        if self.defaultText is not None:
            return self.defaultText
        if isinstance(self.default, float) and self.default.is_integer():
            return "%d" % (self.default,)
        return str(self.default)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "config", FILE, _nonEmpty, "the configuration file",
        "A TOML file describing one or more proxies, one [[proxy]] table each "
        "(twistd client-proxy --example-config prints one): the settings of the proxies then "
        "come from it alone.",
        defaultText="none",
    ),
    Setting(
        "jid", PROXY, componentJID, "the component JID",
        "The component's JID, a domain such as proxy.example.org that the "
        "server knows as an external component.",
        defaultText="required", required=True, topLevel=False,
    ),
    Setting(
        "target", PROXY, targetJID, "the target",
        "The bare JID of the implementing client's account, such as "
        "service@example.org, whose online resources serve the requests.",
        defaultText="required", required=True, topLevel=False,
    ),
    Setting(
        "secretFile", PROXY, lambda path, name: readSecret(path), "the secret file",
        "A file holding the component secret on its first line, readable only "
        "by the proxy's user.",
        defaultText="required (or secret)", field="secret", path=True,
    ),
    Setting(
        "secret", PROXY, _nonEmpty, "the component secret",
        "The component secret itself. Prefer secret-file: a secret on the "
        "command line is visible to every user of the machine.",
        defaultText="required (or secret-file)", required=True, topLevel=False, secret=True,
    ),
    Setting(
        "endpoint", PROXY, checkEndpoint, "the endpoint",
        "The server's component port, as a Twisted client endpoint string: "
        "tcp:host=...:port=..., tls:host=...:port=... (checks the server's "
        "certificate for that host; trustRoots=DIR for a private CA), "
        "unix:path=....",
        default=DEFAULT_ENDPOINT,
    ),
    Setting(
        "timeout", PROXY, _positive(), "the timeout",
        "Seconds a request may wait for its answer.",
        default=30.0, types=NUMBER,
    ),
    Setting(
        "keepalive", PROXY, _positive(), "the keepalive interval",
        "Seconds between XEP-0199 pings of the server; a ping still "
        "unanswered at the next one drops the connection.",
        default=60.0, types=NUMBER,
    ),
    Setting(
        "standbyInterval", PROXY, _positive(), "the standby interval",
        "Seconds between tries to take over while another connection serves "
        "the component's JID: with an instance JID, pings of the component's "
        "JID from it; without, tries to connect. A standby takes over within "
        "about this time of the active instance's death.",
        default=1.0, types=NUMBER,
    ),
    Setting(
        "maxInFlightPerRequester", PROXY, _positive(int),
        "the limit of requests in flight per requester",
        "Requests one requester may have in flight, counted per bare JID: "
        "all its resources together.",
        default=1000, types=INTEGER,
    ),
    Setting(
        "maxInFlightPerDomain", PROXY, _positive(int),
        "the limit of requests in flight per domain",
        "Requests the requesters of one domain together may have in flight, "
        "so that no domain holds more than its share of max-in-flight.",
        defaultText="a quarter of max-in-flight, at least 1", types=INTEGER,
    ),
    Setting(
        "maxInFlight", PROXY, _positive(int), "the limit of requests in flight",
        "Requests all requesters together may have in flight.",
        default=100_000, types=INTEGER,
    ),
    Setting(
        "maxRetainedBytes", PROXY, _positive(int), "the limit of bytes retained",
        "Bytes of requests kept in memory for a retry, all requests "
        "together; past it, new get requests are refused.",
        default=DEFAULT_MAX_RETAINED_BYTES,
        defaultText="%d (%d MiB)" % (DEFAULT_MAX_RETAINED_BYTES, DEFAULT_MAX_RETAINED_BYTES >> 20),
        types=INTEGER,
    ),
    Setting(
        "maxStanzaSize", PROXY, _positive(int, minimum=4096), "the largest stanza",
        "Bytes of the largest stanza the component sends, at least 4096. Keep "
        "it below the server's limit on a component stream, which ends the "
        "stream past it: Prosody's component_stanza_size_limit (512 KiB by "
        "default), ejabberd's max_stanza_size on the ejabberd_service "
        "listener (infinity by default in 23.01); for others, see your "
        "server's limit.",
        default=DEFAULT_MAX_STANZA_SIZE,
        defaultText="%d (%d KiB)" % (DEFAULT_MAX_STANZA_SIZE, DEFAULT_MAX_STANZA_SIZE // 1024),
        types=INTEGER,
    ),
    Setting(
        "maxSubscribers", PROXY, _positive(int), "the limit of subscribers",
        "Users the component keeps as subscribers to its presence; past it, "
        "a subscription request is refused.",
        default=100_000, types=INTEGER,
    ),
    Setting(
        "maxSubscribersPerDomain", PROXY, _positive(int),
        "the limit of subscribers per domain",
        "Subscribers of one domain; past it, a subscription request from "
        "that domain is refused.",
        default=10_000, types=INTEGER,
    ),
    Setting(
        "allow", PROXY, jidList, "the allow list",
        "Bare JIDs and domains that may use the proxy, and no others: "
        "comma-separated on the command line and in the environment, an "
        "array of strings in a file. The target is always allowed.",
        default=(), defaultText="everyone", types=ARRAY,
    ),
    Setting(
        "deny", PROXY, jidList, "the deny list",
        "Bare JIDs and domains that may not use the proxy; wins over allow. "
        "Written as allow.",
        default=(), defaultText="nobody", types=ARRAY,
    ),
    Setting(
        "strategy", PROXY, strategy, "the strategy",
        "How the resource that serves a request is chosen: %s."
        % (", ".join(sorted(STRATEGIES)),),
        default="random",
    ),
    Setting(
        "drainShow", PROXY, show, "the drain show",
        "The presence show (away, chat, dnd or xa) by which a resource of "
        "the target says it is draining: it gets no new requests or "
        "messages, and answers those it holds, before it leaves (a rolling "
        "deploy without errors, see docs/protocol.rst).",
        default="xa",
    ),
    Setting(
        "routeByFeatures", PROXY, boolean, "routing by features",
        "Send a request only to resources that advertise the namespace of "
        "its payload in their entity capabilities (XEP-0115), learned by "
        "disco#info once per ver; resources without caps serve everything. "
        "A flag on the command line (--no-route-by-features turns it off); "
        "true or false in the environment and in a file.",
        default=False, defaultText="false", types=BOOLEAN,
    ),
    Setting(
        "stateFile", PROXY, checkStateFile, "the state file",
        "An SQLite file keeping the users subscribed to the component's "
        "presence across restarts, created if missing; several proxies may "
        "share it.",
        defaultText="none: subscribers are forgotten at every restart", path=True,
    ),
    Setting(
        "instanceJid", PROXY, componentJID, "the instance JID",
        "A component JID of this instance's own, for a pool of instances "
        "sharing jid on a server that spreads stanzas over them (ejabberd).",
        defaultText="none", topLevel=False,
    ),
    Setting(
        "instanceEndpoint", PROXY, checkEndpoint, "the instance endpoint",
        "Where the instance JID's connection goes, if not to endpoint.",
        defaultText="endpoint", topLevel=False,
    ),
    Setting(
        "metrics", PROCESS, checkServerEndpoint, "the metrics endpoint",
        "Serve Prometheus metrics of every proxy over HTTP at /metrics on "
        "this Twisted server endpoint, such as tcp:9100:interface=127.0.0.1.",
        defaultText="none",
    ),
    Setting(
        "logFormat", PROCESS, logFormat, "the log format",
        "How log lines are written: text, twistd's lines, or json, one JSON "
        "object a line with the fields time, level, proxy, event, reason, "
        "text and source, for a log collector (where twistd writes its log: "
        "the --logfile, else standard output; proxy.tac: standard output).",
        default="text",
    ),
)

SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def _fieldSettings(fieldName: str) -> list[Setting]:
    """
    The settings that fill the field C{fieldName}.
    """
    return [s for s in SETTINGS if s.field == fieldName]


# Where settings come from.


def _given(value: object) -> bool:
    """
    Whether a setting was given: C{None} and the empty string stand for
    "use the default" (an empty environment variable, an option left out).
    """
    return value is not None and value != ""


@dataclass(frozen=True)
class Source:
    """
    Settings given in one place, and how that place names them.

    @ivar values: the value of each setting given, by its name.
    @ivar name: how a message names a setting given here.
    @ivar way: how to give a setting here, for the message that it is
        missing (C{None} for a place that cannot give it).
    """

    values: Mapping[str, object]
    name: Callable[[Setting], str]
    way: Callable[[Setting], str | None]

    def only(self, fieldName: str) -> "Source":
        """
        The settings given here that fill the field C{fieldName}.
        """
        return replace(
            self, values={s.name: self.values.get(s.name) for s in _fieldSettings(fieldName)}
        )


def commandLine(options: Mapping[str, object]) -> Source:
    """
    The settings of the command line: C{options} holds the value of each
    option, by its name without dashes, C{None} for an option left out.
    """
    return Source(
        {s.name: options.get(s.option) for s in SETTINGS},
        lambda s: "--" + s.option,
        lambda s: "--" + s.option,
    )


def environment(environ: Mapping[str, str] = os.environ) -> Source:
    """
    The settings of the environment's C{CLIENT_PROXY_*} variables.
    """
    return Source(
        {s.name: environ.get(s.variable) for s in SETTINGS},
        lambda s: s.variable,
        lambda s: "set " + s.variable,
    )


def _parameters(values: Mapping[str, object]) -> Source:
    """
    The settings given to L{build} as parameters.
    """
    return Source(values, lambda s: s.label, lambda s: s.name)


def _merge(sources: Sequence[Source], scopes: Iterable[str]) -> dict[str, tuple[object, str]]:
    """
    The settings of C{scopes} given in C{sources}, the first source that
    gives a field winning, each with the name its source gives it.

    @raise ConfigError: one source gives two settings of one field.
    """
    merged: dict[str, tuple[object, str]] = {}
    taken: set[str] = set()
    for source in sources:
        given: dict[str, Setting] = {}
        for s in SETTINGS:
            if s.scope not in scopes or not _given(source.values.get(s.name)):
                continue
            other = given.get(s.field)
            if other is not None:
                raise ConfigError(
                    "give %s or %s, not both" % (source.name(other), source.name(s)),
                    "give %s or %s, not both" % (other.key, s.key),
                    s.name,
                )
            given[s.field] = s
            if s.field not in taken:
                merged[s.name] = (source.values[s.name], source.name(s))
        taken |= given.keys()
    return merged


def _checkMerged(merged: Mapping[str, tuple[object, str]]) -> dict[str, Any]:
    """
    Check the settings L{_merge} returns.

    @return: the checked value of each, by the field it fills.
    """
    return {
        SETTINGS_BY_NAME[name].field: _check(SETTINGS_BY_NAME[name], value, label)
        for name, (value, label) in merged.items()
    }


def _check(setting: Setting, value: object, name: str) -> Any:
    """
    C{setting.check(value, name)}; a L{ConfigError} it raises is marked as
    the fault of C{setting}.
    """
    try:
        return setting.check(value, name)
    except ConfigError as e:
        if e.key is None:
            e.key = setting.name
        raise


def _missing(setting: Setting, sources: Sequence[Source]) -> ConfigError:
    ways = [
        way
        for source in sources
        for s in _fieldSettings(setting.field)
        if (way := source.way(s)) is not None
    ]
    hint = ": give %s" % (" or ".join(ways),) if ways else ""
    return ConfigError("%s is missing%s" % (setting.label, hint), "is missing", setting.name)


def _proxy(sources: Sequence[Source]) -> ProxyConfig:
    """
    Check the settings of one proxy given in C{sources} (the first that
    gives a setting wins) and build its L{ProxyConfig}.

    @raise ConfigError: the first setting missing or malformed.
    """
    merged = _merge(sources, [PROXY])
    return _complete(_checkMerged(merged), lambda key: merged[key][1], sources)


def _complete(
    values: Mapping[str, Any],
    name: Callable[[str], str] = lambda key: SETTINGS_BY_NAME[key].key,
    sources: Sequence[Source] = (),
) -> ProxyConfig:
    """
    Build a L{ProxyConfig} from the checked values of its fields: the
    defaults of those not given, and the checks that involve more than
    one setting.

    @param name: how to name a setting, by its name, in a message.
    @param sources: where the settings could have been given, for the
        message that one is missing.
    @raise ConfigError: a required setting is missing, or two settings do
        not go together.
    """
    complete = dict(values)
    for s in SETTINGS:
        if s.scope == PROXY and s.field == s.name and s.field not in complete:
            if s.required:
                raise _missing(s, sources)
            complete[s.field] = s.default
    if complete["maxInFlightPerDomain"] is None:
        complete["maxInFlightPerDomain"] = max(1, complete["maxInFlight"] // 4)
    jid, instance = complete["jid"], complete["instanceJid"]
    if instance == jid:
        raise _fault(
            "instanceJid", name, "%r must differ from the component JID it stands in for" % (jid,)
        )
    host = JID(complete["target"]).host
    if host in (jid, instance):
        raise _fault(
            "target",
            name,
            "%r is an account of the component's own domain %s: the target must be an "
            "account of the server" % (complete["target"], host),
        )
    return ProxyConfig(**complete)


def _fault(key: str, name: Callable[[str], str], detail: str) -> ConfigError:
    """
    The error for the setting C{key}, named C{name(key)}.
    """
    error = _invalid(name(key), detail)
    error.key = key
    return error


def build(
    jid: str | None = None,
    target: str | None = None,
    environ: Mapping[str, str] = os.environ,
    **settings: object,
) -> ProxyConfig:
    """
    Check every setting and build a L{ProxyConfig}: the one call for
    Python code. The parameters are the names of L{SETTINGS} (C{timeout},
    C{secretFile}, C{maxInFlight}...); one that is C{None} or empty takes
    its default.

    The secret comes from C{secret} or C{secretFile}, else from the
    environment: C{CLIENT_PROXY_SECRET_FILE} or C{CLIENT_PROXY_SECRET}.

    @raise ConfigError: a setting is missing or malformed; its C{key} is the
        parameter at fault.
    @raise TypeError: a parameter is not a setting of a proxy.
    """
    unknown = [
        name for name in settings
        if name not in SETTINGS_BY_NAME or SETTINGS_BY_NAME[name].scope != PROXY
    ]
    if unknown:
        raise TypeError("build() got unexpected settings: %s" % (", ".join(unknown),))
    given = _parameters(dict(settings, jid=jid, target=target))
    return _proxy([given, environment(environ).only("secret")])


def fromEnvironment(environ: Mapping[str, str] = os.environ) -> ProxyConfig:
    """
    Build the L{ProxyConfig} of one proxy from C{CLIENT_PROXY_*} variables.
    """
    return _proxy([environment(environ)])


def load(sources: Sequence[Source]) -> ProcessConfig:
    """
    The configuration of the process from C{sources}, the first that gives
    a setting winning: C{[commandLine(...), environment()]} for twistd,
    C{[environment()]} for proxy.tac.

    With a configuration file (C{--config}, C{CLIENT_PROXY_CONFIG}), the
    proxies are the file's, read once, and the settings of the process
    given in C{sources} win over the file's.

    @raise ConfigError: a setting is missing or malformed, or a file and
        settings of a proxy are both given.
    """
    merged = _merge(sources, [PROCESS, FILE])
    process = _checkMerged(merged)
    path = process.pop("config", None)
    if path is None:
        return ProcessConfig((_proxy(sources),), **process)
    given = _merge(sources, [PROXY])
    if given:
        raise ConfigError(
            "%s %s describes the proxies: give their settings in the file, not with %s"
            % (merged["config"][1], path, ", ".join(label for value, label in given.values()))
        )
    return replace(readFile(path), **process)


# Configuration files: `twistd client-proxy --config proxy.toml`, or
# CLIENT_PROXY_CONFIG. client_proxy/proxy.toml.example shows the format:
# top-level keys, then one [[proxy]] table per proxy.

#: The keys of a [[proxy]] table.
PROXY_KEYS: dict[str, Setting] = {s.key: s for s in SETTINGS if s.scope == PROXY}

#: The keys of the top level: settings of the process, and defaults of the
#: proxies.
TOP_LEVEL_KEYS: dict[str, Setting] = {
    s.key: s for s in SETTINGS if s.scope == PROCESS or (s.scope == PROXY and s.topLevel)
}

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


def _checkValue(key: str, setting: Setting, value: object, folder: str) -> object:
    """
    Check the type then the value of one key of the file.

    @return: the value checked.
    @raise ConfigError: its C{detail} says what is wrong, without the key.
    """
    if isinstance(value, bool) != setting.flag or not isinstance(value, setting.types):
        expected = "a number" if float in setting.types else _TYPE_NAMES[setting.types[0]]
        shown = "" if setting.secret or isinstance(value, (dict, list)) else " (%r)" % (value,)
        raise ConfigError(
            "%s must be %s" % (key, expected),
            "must be %s, not %s%s" % (expected, _typeName(value), shown),
        )
    if setting.path and value != IN_MEMORY:
        value = os.path.join(folder, os.path.expanduser(str(value)))
    return setting.check(value, key)


def _checkTable(
    table: Mapping[str, object],
    keys: Mapping[str, Setting],
    folder: str,
    report: Callable[[str, str], None],
) -> dict[str, Any]:
    """
    Check every key of C{table}; report each error as C{report(key,
    detail)}.

    @return: the checked value of every key that is right, by the field
        it fills.
    """
    checked: dict[str, Any] = {}
    for key, value in table.items():
        setting = keys.get(key)
        if setting is None:
            continue
        try:
            checked[setting.field] = _checkValue(key, setting, value, folder)
        except ConfigError as e:
            report(key, e.detail)
    return checked


def _proxyLabel(index: int, table: Mapping[str, object]) -> str:
    jid = table.get("jid")
    if isinstance(jid, str) and jid:
        return "[[proxy]] %d (%s)" % (index, jid)
    return "[[proxy]] %d" % (index,)


def _readTOML(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError("%s: cannot read the configuration file: %s" % (path, e.strerror or e))
    except UnicodeDecodeError as e:
        raise ConfigError("%s: not a UTF-8 text file: %s" % (path, e))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("%s: not a valid TOML file: %s" % (path, e))


def _checkProxyKeys(
    table: Mapping[str, object], top: Mapping[str, object], report: Callable[[str, str], None]
) -> None:
    """
    Report the keys of a [[proxy]] table that are unknown, and the fields
    given twice or not at all (C{top} holds the top level's keys).
    """
    for key in table:
        if key not in PROXY_KEYS:
            report(key, "unknown key; a [[proxy]] table takes: %s" % ", ".join(sorted(PROXY_KEYS)))
    for s in SETTINGS:
        if s.scope != PROXY or s.field != s.name or not s.required:
            continue
        ways = _fieldSettings(s.field)
        inTable = [w.key for w in ways if w.key in table]
        if len(inTable) > 1:
            report(inTable[0], "give %s, not both" % (" or ".join(inTable),))
        elif not inTable and not any(w.topLevel and w.key in top for w in ways):
            first = ways[0]
            hint = ""
            if len(ways) > 1:
                hint = ": give %s (or %s) in the [[proxy]] table" % (
                    first.key, " or ".join(w.key for w in ways[1:]))
                atTop = [w.key for w in ways if w.topLevel]
                if atTop:
                    hint += ", or %s at the top level" % (" or ".join(atTop),)
            report(first.key, "is missing" + hint)


def readFile(path: str) -> ProcessConfig:
    """
    Read and check a configuration file.

    Every error is reported, each on a line of the L{ConfigError}'s message
    of the form C{FILE: [[proxy]] N (JID): KEY: what is wrong} (C{FILE: KEY:
    ...} for the top level), after a line counting them if there are
    several; secrets are never shown.

    @raise ConfigError: the file cannot be read, is not TOML, or holds a
        missing, unknown or malformed setting.
    """
    document = _readTOML(path)
    folder = os.path.dirname(os.path.abspath(path))
    errors: list[str] = []

    def reporter(where: str) -> Callable[[str, str], None]:
        prefix = "%s: %s" % (path, where) if where else path
        return lambda key, detail: errors.append("%s: %s: %s" % (prefix, key, detail))

    # The top level: settings of the process, and defaults of the proxies.
    topLevel = reporter("")
    for key in document:
        if key == "proxy" or key in TOP_LEVEL_KEYS:
            continue
        if key in PROXY_KEYS:
            topLevel(key, "belongs in a [[proxy]] table, not at the top level")
        else:
            topLevel(
                key,
                "unknown key; the top level takes: %s"
                % ", ".join(sorted(["proxy", *TOP_LEVEL_KEYS])),
            )
    checked = _checkTable(document, TOP_LEVEL_KEYS, folder, topLevel)
    fileSettings = {
        name: value for name, value in checked.items() if SETTINGS_BY_NAME[name].scope == PROCESS
    }
    defaults = {name: value for name, value in checked.items() if name not in fileSettings}

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
    for index, table in enumerate(tables, 1):
        report = reporter(_proxyLabel(index, table))
        count = len(errors)
        _checkProxyKeys(table, document, report)
        settings = _checkTable(table, PROXY_KEYS, folder, report)
        jid = settings.get("jid")
        if jid in jids:
            report(
                "jid",
                "%r is already the jid of [[proxy]] %d: two proxies cannot share a jid"
                % (jid, jids[jid]),
            )
        elif isinstance(jid, str):
            jids[jid] = index
        if len(errors) > count or topLevelErrors:
            # Build only what is known right: a default at fault would be
            # reported again for every proxy.
            continue
        try:
            proxies.append(_complete(dict(defaults, **settings)))
        except ConfigError as e:
            key = SETTINGS_BY_NAME[e.key].key if e.key else "?"
            report(key, e.detail)

    if len(errors) > 1:
        raise ConfigError("%d errors in %s:\n%s" % (len(errors), path, "\n".join(errors)))
    if errors:
        raise ConfigError(errors[0])
    return ProcessConfig(proxies=tuple(proxies), **fileSettings)


def loadFile(path: str) -> list[ProxyConfig]:
    """
    The proxies of a configuration file (see L{readFile}).

    @raise ConfigError: as L{readFile}.
    """
    return list(readFile(path).proxies)


# Warnings: settings that work, but that an admin should know about.


def endpointFields(description: str) -> tuple[str, list[str], dict[str, str]]:
    """
    Split an endpoint string into its type, positional arguments and
    keyword arguments, undoing backslash escapes. (Twisted's own parser is
    private: C{twisted.internet.endpoints._parse}.)
    """
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    kind, *rest = parts
    args = [p for p in rest if "=" not in p]
    kwargs = dict(p.split("=", 1) for p in rest if "=" in p)
    return kind.lower(), args, kwargs


def _loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _plainRemote(endpoint: str) -> bool:
    """
    Whether a client endpoint is plain TCP to a host that is not loopback.
    """
    kind, args, kwargs = endpointFields(endpoint)
    host = kwargs.get("host", args[0] if args else "")
    return kind == "tcp" and not _loopback(host)


def _publicServer(endpoint: str) -> bool:
    """
    Whether a TCP server endpoint listens on an interface that is not
    loopback (by default, all of them).
    """
    kind, args, kwargs = endpointFields(endpoint)
    interface = kwargs.get("interface", args[1] if len(args) > 1 else "")
    return kind in ("tcp", "tcp6", "ssl") and not _loopback(interface)


def startupWarnings(config: ProcessConfig, secretOnCommandLine: bool = False) -> list[str]:
    """
    What to warn an admin about once at start-up, in words: a secret on
    the command line, a component connection in plain TCP to another
    machine, metrics served beyond loopback.

    @param secretOnCommandLine: whether C{--secret} was given.
    """
    warnings = []
    if secretOnCommandLine:
        warnings.append(
            "--secret puts the component secret on the command line, where every user of "
            "this machine can read it: use --secret-file or CLIENT_PROXY_SECRET_FILE"
        )
    for proxy in config.proxies:
        for endpoint in dict.fromkeys(filter(None, [proxy.endpoint, proxy.instanceEndpoint])):
            if _plainRemote(endpoint):
                warnings.append(
                    "%s: the endpoint %s is plain TCP to another machine: every stanza "
                    "crosses the network unencrypted; use tls:, or a loopback or Unix socket"
                    % (proxy.jid, endpoint)
                )
    if config.metrics is not None and _publicServer(config.metrics):
        warnings.append(
            "the metrics endpoint %s is not on loopback: whoever reaches it reads the "
            "metrics; bind it with interface=127.0.0.1 unless that is meant" % (config.metrics,)
        )
    return warnings


# The reference of the settings, for docs/options.rst.


def reference() -> str:
    """
    The reference of every setting in reStructuredText, as in
    C{docs/options.rst} (C{scripts/options-reference} writes it).
    """

    def code(text: str) -> str:
        return "``%s``" % (text,)

    rows = [["Option", "Environment variable", "File key", "Default", "Meaning"]]
    for s in SETTINGS:
        if not s.inFile:
            where = "-"
        elif s.scope == PROXY:
            where = code(s.key) + ("" if s.topLevel else " ([[proxy]] only)")
        else:
            where = code(s.key) + " (top level only)"
        rows.append(
            ["``--%s``" % (s.option,), code(s.variable), where, s.describeDefault(), s.help]
        )
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 20 25 15 15 40",
        "",
    ]
    for row in rows:
        first, *others = row
        lines.append("   * - " + first)
        lines.extend("     - " + cell for cell in others)
    return "\n".join(lines) + "\n"
