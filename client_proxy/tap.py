"""
The C{twistd client-proxy} command: options and service.

The options are made from L{config.SETTINGS}; each one can also be given
by its C{CLIENT_PROXY_*} variable, the command line winning.
"""

import os
import platform
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib import resources

import twisted
from twisted.application.service import IService, MultiService
from twisted.logger import ILogObserver, Logger
from twisted.python import usage
from twisted.python.components import Componentized

from client_proxy import __version__, config
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
    optParameters = [[s.option, None, None, _help(s)] for s in config.SETTINGS if not s.flag]
    optFlags = [[s.option, None, _help(s)] for s in config.SETTINGS if s.flag] + [
        ["no-" + s.option, None, "Turn --%s off, whatever %s says." % (s.option, s.variable)]
        for s in config.SETTINGS
        if s.flag
    ]

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        super().__init__()
        self.environ = environ
        for setting in config.SETTINGS:
            if setting.flag:
                self[setting.option] = None

    def opt_version(self) -> None:
        """
        Print the versions of client-proxy, Twisted and Python, and exit.
        """
        print(
            "client-proxy %s (Twisted %s, Python %s)"
            % (__version__, twisted.__version__, platform.python_version())
        )
        raise SystemExit(0)

    def opt_example_config(self) -> None:
        """
        Print an example configuration file, which explains every key, and
        exit (twistd client-proxy --example-config > proxy.toml).
        """
        example = resources.files("client_proxy").joinpath("proxy.toml.example")
        sys.stdout.write(example.read_text(encoding="utf-8"))
        raise SystemExit(0)

    def parseOptions(self, options: list[str] | None = None) -> None:
        with exitOnError():
            super().parseOptions(options)

    def postOptions(self) -> None:
        """
        Check the configuration: C{self["configuration"]} holds it,
        C{self["proxies"]} and C{self["metrics"]} its parts.
        """
        for setting in config.SETTINGS:
            if setting.flag and self["no-" + setting.option]:
                if self[setting.option]:
                    raise usage.UsageError(
                        "--%s and --no-%s together" % (setting.option, setting.option)
                    )
                # Given, and false: the environment's value no longer counts.
                self[setting.option] = False
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
    warnings: list[str],
    load: Callable[[], config.ProcessConfig] | None = None,
    twistdOptions: Mapping[str, object] | None = None,
) -> IService:
    """
    The service of every proxy of C{configuration}, and of the metrics, as
    twistd runs it (L{TwistdService}); C{warnings} are logged once.

    @param load: reads the configuration again on SIGHUP; C{None} for no
        reload.
    @param twistdOptions: twistd's own options, which say where its log
        goes (for C{--log-format json}); C{None} for standard output.
    """
    observer = None
    if configuration.logFormat == "json":
        observer = jsonLogObserver(twistdLogFile(twistdOptions))
    with exitOnError():
        service = ProcessService(configuration, load=load)
    for warning in warnings:
        log.warn("{warning}", warning=warning)
    process = TwistdService(observer)
    service.setServiceParent(process)
    return process


class TwistdService(MultiService):
    """
    The services of the process, as twistd runs them. A configuration
    error found only when twistd starts them, such as a metrics port in
    use, ends twistd as one found before (L{exitOnError}): one line, exit
    status 1.

    @ivar logObserver: the observer twistd logs to, if not its own
        (C{--log-format json}).
    """

    def __init__(self, logObserver: ILogObserver | None = None) -> None:
        super().__init__()
        self.logObserver = logObserver

    def setServiceParent(self, parent) -> None:
        """
        Attached to an application (what twistd does with the plugin's
        service, and C{proxy.tac} with its own), make L{logObserver} the
        application's L{ILogObserver}: twistd reads it before it starts
        logging.
        """
        if self.logObserver is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.logObserver)
        super().setServiceParent(parent)

    def privilegedStartService(self) -> None:
        # twistd's first call to the services, once it runs as a daemon.
        try:
            with exitOnError():
                super().privilegedStartService()
        except SystemExit as e:
            raise StartFailed(e.code) from None


class StartFailed(SystemExit, Exception):
    """
    An exit with one line, as L{SystemExit}, that twistd's start-up also
    catches as an L{Exception}: it then removes its pid file and, run as a
    daemon, tells the parent process waiting for the start, which prints
    the line and exits with status 1 (on a bare C{SystemExit} it would wait
    for ever).
    """


def makeService(options: Options) -> IService:
    """
    One service holding the service of every proxy configured.
    """
    return makeProcessService(
        options["configuration"],
        options["warnings"],
        options.load,
        getattr(options, "parent", None),
    )
