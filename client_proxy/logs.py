"""
Log lines for log collectors (C{--log-format json}): one JSON object a
line, with the fields C{time}, C{level}, C{proxy}, C{event}, C{reason},
C{text} and C{source}.

The proxy's own events about its connections, its life and its reloads
carry C{proxy} (the proxy's JID), C{event} (C{connect_failed},
C{authenticated}, C{standby}, C{reloaded}...) and, for a failure,
C{reason} (C{connection refused}, C{secret refused}...); other events
have C{null} there. C{text} is the line as the text format writes it,
traceback included; C{source} is the logger's namespace.
"""

import json
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import FileLogObserver, eventAsText
from twisted.python.logfile import LogFile

#: The log formats of the setting C{log_format}.
LOG_FORMATS = ("text", "json")

#: Twisted's level names, as log collectors spell them.
_LEVELS = {"warn": "warning"}


def formatJSON(event: dict[str, Any]) -> str:
    """
    One log event as a line of JSON.
    """
    level = event.get("log_level")
    name = level.name if level is not None else "info"
    moment = event.get("log_time")
    record = {
        "time": None
        if moment is None
        else datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="milliseconds"),
        "level": _LEVELS.get(name, name),
        "proxy": event.get("proxy"),
        "event": event.get("event"),
        "reason": event.get("reason"),
        "text": eventAsText(event, includeTimestamp=False, includeSystem=False),
        "source": event.get("log_namespace"),
    }
    return json.dumps(record, ensure_ascii=False, default=str) + "\n"


def jsonLogObserver(outFile: IO[str]) -> FileLogObserver:
    """
    A log observer that writes each event to C{outFile} as a line of
    JSON (L{formatJSON}).
    """
    return FileLogObserver(outFile, formatJSON)


def twistdLogFile(options: Mapping[str, Any] | None) -> IO[str]:
    """
    Where twistd would write its log, from its options (C{--logfile},
    C{--nodaemon}): the file given, standard output for C{-} or when it
    runs in the foreground without a file, else C{twistd.log}. Without
    twistd's options (C{None}: a C{.tac} file cannot see them), standard
    output.
    """
    if options is None:
        return sys.stdout
    path = options.get("logfile")
    if path == "-" or (not path and options.get("nodaemon")):
        return sys.stdout
    return LogFile.fromFullPath(path or "twistd.log")
