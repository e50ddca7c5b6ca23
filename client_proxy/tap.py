"""
The C{twistd client-proxy} command: options and service.

The options are made from L{config.SETTINGS}; each one can also be given
by its C{CLIENT_PROXY_*} variable, the command line winning.
"""

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from collections.abc import Callable

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from client_proxy import config
from client_proxy.logs import jsonLogObserver, twistdLogFile
from client_proxy.store import StateFileError
from client_proxy.service import ProcessService

log = Logger()


def _help(setting: config.Setting) -> str:
    return "%s [%s; default: %s]" % (setting.help, setting.variable, setting.describeDefault())


class Options(usage.Options):
    """
    The options of C{twistd client-proxy}.

    A configuration error ends twistd with one line and exit status 1,
    rather than twistd's usage text followed by the error: L{parseOptions}
    turns it into C{SystemExit}, which twistd lets through.

    @ivar environ: the environment whose C{CLIENT_PROXY_*} variables give
        the options not given on the command line.
    """

    synopsis = "--jid JID --target JID --secret-file FILE [options] | --config FILE"
    longdesc = (
        "An XMPP component (XEP-0114) that forwards IQ requests sent to it to "
        "the online resources of one account, the implementing client. Every "
        "option can be given by the environment variable shown, the command "
        "line winning. Give the secret in a file (--secret-file) or the "
        "environment: a secret on the command line is visible to every user "
        "of the machine. To run several proxies in one process, each with "
        "its own component connection, describe them in a TOML file given "
        "with --config; the options of a proxy then go in the file."
    )
    # None as the default tells an option left out from one given; the
    # defaults are the settings'.
    optParameters = [[s.option, None, None, _help(s)] for s in config.SETTINGS]

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        super().__init__()
        self.environ = environ

    def parseOptions(self, options: list[str] | None = None) -> None:
        with exitOnError():
            super().parseOptions(options)

    def postOptions(self) -> None:
        """
        Check the configuration: C{self["configuration"]} holds it,
        C{self["proxies"]} and C{self["metrics"]} its parts.
        """
        loaded = self["configuration"] = self.load()
        self["proxies"] = list(loaded.proxies)
        self["metrics"] = loaded.metrics
        self["warnings"] = config.startupWarnings(loaded, self["secret"] is not None)

    def load(self) -> config.ProcessConfig:
        """
        Read the configuration: the command line, then the environment
        (and the files they name). Called again on SIGHUP.
        """
        return config.load([config.commandLine(self), config.environment(self.environ)])


@contextmanager
def exitOnError() -> Iterator[None]:
    """
    Turn a configuration error into C{SystemExit} with its message, one
    line (a line per error of a file): twistd, and its loader of a
    C{.tac} file, let it through and exit with status 1, where any other
    exception would print a traceback, and a usage error the usage text.
    """
    try:
        yield
    except usage.UsageError as e:
        raise SystemExit("client-proxy: %s (see twistd client-proxy --help)" % (e,))
    except (config.ConfigError, StateFileError) as e:
        # The state file is opened when the service is made, not when it
        # is checked.
        raise SystemExit("client-proxy: %s" % (e,))


def makeProcessService(
    configuration: config.ProcessConfig,
    load: Callable[[], config.ProcessConfig],
    warnings: list[str],
    twistdOptions: Mapping[str, object] | None = None,
) -> IService:
    """
    The service of every proxy of C{configuration}, and of the metrics;
    C{load} reads the configuration again on SIGHUP, and C{warnings} are
    logged once.

    @param twistdOptions: twistd's own options, which say where its log
        goes (for C{--log-format json}); C{None} for standard output.
    """
    observer = None
    if configuration.logFormat == "json":
        observer = jsonLogObserver(twistdLogFile(twistdOptions))
    with exitOnError():
        service = ProcessService(configuration, load=load, logObserver=observer)
    for warning in warnings:
        log.warn("{warning}", warning=warning)
    return service


def makeService(options: Options) -> IService:
    """
    One service holding the service of every proxy configured.
    """
    return makeProcessService(
        options["configuration"],
        options.load,
        options["warnings"],
        getattr(options, "parent", None),
    )
