"""
The configuration of one proxy, checked before anything connects.

Every check raises L{ConfigError} with a message naming the setting at
fault; callers turn it into a usage error or a plain exit, never a
traceback. The secret never appears in a message or a C{repr}.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from twisted.words.protocols.jabber.jid import InvalidFormat, JID

from client_proxy.dispatch import STRATEGIES

DEFAULT_ENDPOINT = "tcp:host=127.0.0.1:port=5347"


class ConfigError(Exception):
    """
    A setting is missing or malformed; the message says which and why.
    """


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
    @ivar maxInFlightPerRequester: requests one requester may have in
        flight.
    @ivar maxInFlight: requests all requesters together may have in flight.
    @ivar strategy: the name of the dispatch strategy.
    """

    jid: str
    secret: str = field(repr=False)
    target: str
    endpoint: str = DEFAULT_ENDPOINT
    timeout: float = 30.0
    maxInFlightPerRequester: int = 1000
    maxInFlight: int = 100_000
    strategy: str = "random"


def _parseJID(value: str | None, name: str) -> JID:
    if not value:
        raise ConfigError("%s is missing" % (name,))
    try:
        return JID(value)
    except InvalidFormat as e:
        raise ConfigError("%s %r is not a valid JID: %s" % (name, value, e))


def componentJID(value: str | None, name: str = "the component JID") -> str:
    """
    Check a component's JID: a domain, with neither localpart nor resource.
    """
    parsed = _parseJID(value, name)
    if parsed.user is not None or parsed.resource is not None:
        raise ConfigError(
            "%s %r must be a bare domain such as proxy.example.org" % (name, value)
        )
    return parsed.full()


def targetJID(value: str | None, name: str = "the target") -> str:
    """
    Check the target: an account's bare JID, C{user@domain}.
    """
    parsed = _parseJID(value, name)
    if parsed.user is None:
        raise ConfigError("%s %r must be an account, user@domain" % (name, value))
    if parsed.resource is not None:
        raise ConfigError(
            "%s %r must be a bare JID: it stands for all the account's "
            "resources" % (name, value)
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


def checkEndpoint(value: str | None, name: str = "the endpoint") -> str:
    """
    Check that a client endpoint string parses (nothing connects yet).
    """
    from twisted.internet import endpoints, reactor

    if not value:
        raise ConfigError("%s is missing" % (name,))
    try:
        endpoints.clientFromString(reactor, value)
    except Exception as e:
        raise ConfigError("%s %r does not parse: %s" % (name, value, e))
    return value


def number(value: object, name: str, kind: type = float) -> float:
    """
    Check a positive number; C{kind} is C{int} or C{float}.
    """
    try:
        parsed = kind(value)
    except (TypeError, ValueError):
        raise ConfigError("%s %r is not a %s" % (name, value, kind.__name__))
    if parsed <= 0:
        raise ConfigError("%s must be positive, not %r" % (name, value))
    return parsed


def strategy(value: str, name: str = "the strategy") -> str:
    if value not in STRATEGIES:
        raise ConfigError(
            "%s %r is unknown; choose one of %s"
            % (name, value, ", ".join(sorted(STRATEGIES)))
        )
    return value


def build(
    jid: str | None,
    target: str | None,
    secret: str | None = None,
    secretFile: str | None = None,
    endpoint: str | None = None,
    timeout: object = None,
    maxInFlightPerRequester: object = None,
    maxInFlight: object = None,
    strategyName: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> ProxyConfig:
    """
    Check every setting and build a L{ProxyConfig}.

    The secret comes from C{secret}, else from C{secretFile}, else from the
    environment: C{CLIENT_PROXY_SECRET}, then C{CLIENT_PROXY_SECRET_FILE}.
    """
    jid = componentJID(jid)
    target = targetJID(target)
    if secret:
        resolved = secret
    elif secretFile:
        resolved = readSecret(secretFile)
    elif environ.get("CLIENT_PROXY_SECRET"):
        resolved = environ["CLIENT_PROXY_SECRET"]
    elif environ.get("CLIENT_PROXY_SECRET_FILE"):
        resolved = readSecret(environ["CLIENT_PROXY_SECRET_FILE"])
    else:
        raise ConfigError(
            "the component secret is missing: give a secret file, or set "
            "CLIENT_PROXY_SECRET_FILE or CLIENT_PROXY_SECRET"
        )
    defaults = ProxyConfig
    return ProxyConfig(
        jid=jid,
        secret=resolved,
        target=target,
        endpoint=checkEndpoint(endpoint or DEFAULT_ENDPOINT),
        timeout=number(timeout or defaults.timeout, "the timeout"),
        maxInFlightPerRequester=number(
            maxInFlightPerRequester or defaults.maxInFlightPerRequester,
            "the limit of requests in flight per requester",
            int,
        ),
        maxInFlight=number(
            maxInFlight or defaults.maxInFlight, "the limit of requests in flight", int
        ),
        strategy=strategy(strategyName or defaults.strategy),
    )


def fromEnvironment(environ: Mapping[str, str] = os.environ) -> ProxyConfig:
    """
    Build a L{ProxyConfig} from C{CLIENT_PROXY_*} variables, for proxy.tac.
    """
    return build(
        jid=environ.get("CLIENT_PROXY_JID"),
        target=environ.get("CLIENT_PROXY_TARGET"),
        endpoint=environ.get("CLIENT_PROXY_ENDPOINT"),
        timeout=environ.get("CLIENT_PROXY_TIMEOUT"),
        maxInFlightPerRequester=environ.get("CLIENT_PROXY_MAX_IN_FLIGHT_PER_REQUESTER"),
        maxInFlight=environ.get("CLIENT_PROXY_MAX_IN_FLIGHT"),
        strategyName=environ.get("CLIENT_PROXY_STRATEGY"),
        environ=environ,
    )
