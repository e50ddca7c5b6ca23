"""
The proxy's log events as data, for the harness: every event Twisted's
logger publishes is written as JSON to the file named by the environment
variable C{HARNESS_LOG_EVENTS}, in the format of
L{twisted.logger.jsonFileLogObserver} (each record starts with C{\\x1e}
and ends with a newline), which L{harness.proxy.EventLog} reads.

This folder, and nothing else, is put on the C{PYTHONPATH} of the
processes the harness starts, so that they import this module and still
run the installed C{client_proxy}, not the working tree's:

    twistd --logger=harness_events.observer ...   # twistd's log observer
    python -m harness_events SCRIPT [ARG...]      # a script that logs
                                                  # its own way, observed too
"""

import os
import runpy
import sys

from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher, jsonFileLogObserver
from zope.interface import implementer

#: The environment variable naming the file the events go to.
VARIABLE = "HARNESS_LOG_EVENTS"
#: The key of the message formatted, added to each event written.
MESSAGE = "harness_message"


@implementer(ILogObserver)
class MessageAdder:
    """
    Gives C{observer} each event with its message formatted (L{MESSAGE}).
    The JSON form keeps the message's fields, but Twisted 26 formats its
    flattened copy of them without their format specifications: read back,
    C{"{count:,}"} of 4900 would say C{4900}, not C{4,900}.
    """

    def __init__(self, observer: ILogObserver) -> None:
        self.observer = observer

    def __call__(self, event: LogEvent) -> None:
        self.observer(dict(event, **{MESSAGE: formatEvent(event)}))


def observer() -> ILogObserver:
    """
    A log observer writing every event to the file C{$HARNESS_LOG_EVENTS}
    (appended to, flushed at every event).
    """
    return MessageAdder(jsonFileLogObserver(open(os.environ[VARIABLE], "a", encoding="utf-8")))


def main() -> None:
    """
    Run the script C{sys.argv[1]} as C{__main__} with the arguments that
    follow, while an L{observer} sees every event of the global log
    publisher, whatever observers the script begins logging to.
    """
    globalLogPublisher.addObserver(observer())
    sys.argv = sys.argv[1:]
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))  # as `python SCRIPT` has it
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
