"""
The C{twistd client-proxy} command: options and service.
"""

from twisted.application.service import IService
from twisted.python import usage

from client_proxy import config
from client_proxy.dispatch import STRATEGIES
from client_proxy.service import makeProxiesService

#: The options that configure one proxy, and the parameter of
#: L{config.build} each one gives: with --config, the file holds them.
PROXY_OPTIONS = {
    "jid": "jid",
    "target": "target",
    "secret-file": "secretFile",
    "secret": "secret",
    "endpoint": "endpoint",
    "timeout": "timeout",
    "keepalive": "keepalive",
    "standby-interval": "standbyInterval",
    "max-in-flight-per-requester": "maxInFlightPerRequester",
    "max-in-flight": "maxInFlight",
    "strategy": "strategyName",
    "state-file": "stateFile",
    "instance-jid": "instanceJid",
    "instance-endpoint": "instanceEndpoint",
}


class Options(usage.Options):
    synopsis = "--jid JID --target JID --secret-file FILE [options] | --config FILE"
    longdesc = (
        "An XMPP component (XEP-0114) that forwards IQ requests sent to it to "
        "the online resources of one account, the implementing client. Give "
        "the secret in a file (--secret-file) or the environment "
        "(CLIENT_PROXY_SECRET_FILE, CLIENT_PROXY_SECRET): a secret on the "
        "command line is visible to every user of the machine. To run several "
        "proxies in one process, each with its own component connection, "
        "describe them in a TOML file given with --config (see "
        "contrib/proxy.toml.example); the options of a proxy then go in the "
        "file, not on the command line."
    )
    # The defaults of a proxy's options are build()'s: None here tells an
    # option left out from one given, which --config refuses.
    optParameters = [
        ["config", None, None,
         "A TOML file describing one or more proxies ([[proxy]] tables); "
         "replaces the options below."],
        ["jid", None, None, "The component's JID, e.g. proxy.example.org."],
        ["target", None, None, "The implementing client's bare JID."],
        ["secret-file", None, None, "A file holding the component secret."],
        ["secret", None, None, "The component secret (prefer --secret-file)."],
        ["endpoint", None, None,
         "The server's component port, as a Twisted client endpoint string "
         "(tcp:..., tls:..., unix:...) [default: %s]" % (config.DEFAULT_ENDPOINT,)],
        ["timeout", None, None,
         "Seconds a request may wait for its answer [default: %s]"
         % (config.ProxyConfig.timeout,)],
        ["keepalive", None, None,
         "Seconds between pings of the server; a ping unanswered by the next "
         "drops the connection [default: %s]" % (config.ProxyConfig.keepalive,)],
        ["standby-interval", None, None,
         "Seconds between tries to take over while another connection serves "
         "the component's JID [default: %s]" % (config.ProxyConfig.standbyInterval,)],
        ["max-in-flight-per-requester", None, None,
         "Requests one requester may have in flight [default: %s]"
         % (config.ProxyConfig.maxInFlightPerRequester,)],
        ["max-in-flight", None, None,
         "Requests all requesters together may have in flight [default: %s]"
         % (config.ProxyConfig.maxInFlight,)],
        ["strategy", None, None,
         "How a resource is chosen: %s [default: %s]"
         % (", ".join(sorted(STRATEGIES)), config.ProxyConfig.strategy)],
        ["metrics", None, None,
         "Serve Prometheus metrics of every proxy over HTTP at /metrics on "
         "this Twisted server endpoint, e.g. tcp:9100:interface=127.0.0.1 "
         "(with --config, instead of the file's metrics) [default: none]"],
        ["instance-jid", None, None,
         "A component JID of this instance's own, for a pool of instances "
         "sharing --jid on a server that spreads stanzas over them (ejabberd) "
         "[default: none]"],
        ["instance-endpoint", None, None,
         "Where the --instance-jid connection goes, if not to --endpoint "
         "[default: --endpoint]"],
        ["state-file", None, None,
         "An SQLite file keeping the users subscribed to the component's "
         "presence across restarts, created if missing [default: none, "
         "subscribers are forgotten at every restart]"],
    ]

    def postOptions(self) -> None:
        try:
            if self["metrics"] is not None:
                config.checkServerEndpoint(self["metrics"], "--metrics")
            if self["config"] is not None:
                self["proxies"] = self._fromFile(self["config"])
            else:
                self["proxies"] = [
                    config.build(
                        **{parameter: self[option] for option, parameter in PROXY_OPTIONS.items()}
                    )
                ]
        except config.ConfigError as e:
            raise usage.UsageError(str(e))

    def _fromFile(self, path: str) -> list[config.ProxyConfig]:
        given = ["--" + name for name in PROXY_OPTIONS if self[name] is not None]
        if given:
            raise usage.UsageError(
                "--config %s describes the proxies: give their settings in the "
                "file, not with %s" % (path, ", ".join(given))
            )
        read = config.readFile(path)
        if self["metrics"] is None:
            self["metrics"] = read.metrics
        return list(read.proxies)


def makeService(options: Options) -> IService:
    """
    One service holding the service of every proxy configured.
    """
    return makeProxiesService(options["proxies"], metrics=options["metrics"])
