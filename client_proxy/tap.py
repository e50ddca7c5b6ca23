"""
The C{twistd client-proxy} command: options and service.
"""

from twisted.application.service import IService
from twisted.python import usage

from client_proxy import config
from client_proxy.dispatch import STRATEGIES
from client_proxy.service import makeService as makeProxyService


class Options(usage.Options):
    synopsis = "--jid JID --target JID --secret-file FILE [options]"
    longdesc = (
        "An XMPP component (XEP-0114) that forwards IQ requests sent to it to "
        "the online resources of one account, the implementing client. Give "
        "the secret in a file (--secret-file) or the environment "
        "(CLIENT_PROXY_SECRET_FILE, CLIENT_PROXY_SECRET): a secret on the "
        "command line is visible to every user of the machine."
    )
    optParameters = [
        ["jid", None, None, "The component's JID, e.g. proxy.example.org."],
        ["target", None, None, "The implementing client's bare JID."],
        ["secret-file", None, None, "A file holding the component secret."],
        ["secret", None, None, "The component secret (prefer --secret-file)."],
        ["endpoint", None, config.DEFAULT_ENDPOINT,
         "The server's component port, as a Twisted client endpoint string "
         "(tcp:..., tls:..., unix:...)."],
        ["timeout", None, config.ProxyConfig.timeout,
         "Seconds a request may wait for its answer."],
        ["max-in-flight-per-requester", None,
         config.ProxyConfig.maxInFlightPerRequester,
         "Requests one requester may have in flight."],
        ["max-in-flight", None, config.ProxyConfig.maxInFlight,
         "Requests all requesters together may have in flight."],
        ["strategy", None, config.ProxyConfig.strategy,
         "How a resource is chosen: %s." % ", ".join(sorted(STRATEGIES))],
    ]

    def postOptions(self) -> None:
        try:
            self["config"] = config.build(
                jid=self["jid"],
                target=self["target"],
                secret=self["secret"],
                secretFile=self["secret-file"],
                endpoint=self["endpoint"],
                timeout=self["timeout"],
                maxInFlightPerRequester=self["max-in-flight-per-requester"],
                maxInFlight=self["max-in-flight"],
                strategyName=self["strategy"],
            )
        except config.ConfigError as e:
            raise usage.UsageError(str(e))


def makeService(options: Options) -> IService:
    return makeProxyService(options["config"])
