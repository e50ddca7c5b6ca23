"""
The proxy as users run it: a C{twistd} process of the installed package,
whose log events the harness reads as data (L{EventLog}).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from twisted.logger import LogEvent, eventFromJSON, formatEvent, formatEventAsClassicLogText

from harness import processes
from harness.observer.harness_events import MESSAGE

#: The twistd of the Python running the tests: the virtualenv where
#: scripts/setup installed client-proxy with `pip install .`.
TWISTD = str(Path(sys.executable).parent / "twistd")
ROOT = Path(__file__).resolve().parents[1]
#: The folder put on the C{PYTHONPATH} of the processes started here: it
#: holds only C{harness_events}, their log observer.
OBSERVER_PATH = ROOT / "harness" / "observer"


class EventLog:
    """
    The log events a process writes to L{path} as JSON records
    (L{twisted.logger.jsonFileLogObserver}, here from C{harness_events}),
    read as they come.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.clear()

    def clear(self) -> None:
        """
        Start again from an empty file.
        """
        self.path.write_text("")
        self._events: list[LogEvent] = []
        self._offset = 0

    def events(self) -> list[LogEvent]:
        """
        Every event written so far, but one still being written.
        """
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        # JSON escapes newlines and control characters: a raw newline
        # ends a record, and \x1e starts one.
        complete = data.rfind(b"\n") + 1
        for record in data[:complete].split(b"\x1e"):
            if record.strip():
                self._events.append(eventFromJSON(record.decode("utf-8")))
        self._offset += complete
        return list(self._events)

    def text(self) -> str:
        """
        The events as twistd's text log has them: a line each, with its
        time and system, a traceback after it if it has one.
        """
        lines = (formatEventAsClassicLogText(_formatted(event)) for event in self.events())
        return "".join(line or "" for line in lines)


def message(event: LogEvent) -> str:
    """
    The message of C{event}, formatted as the process formatted it.
    """
    return event.get(MESSAGE) or formatEvent(event) or ""


def _formatted(event: LogEvent) -> LogEvent:
    """
    C{event} with its L{message} for format, which needs no field.
    """
    formatted = dict(event, log_format=message(event).replace("{", "{{").replace("}", "}}"))
    formatted.pop("log_flattened", None)
    return formatted


class Logged:
    """
    The log events whose C{fields} have the given values, and whose
    C{log_format} (the message before its fields are filled in) is
    C{log_format} if given.
    """

    def __init__(self, log_format: str | None = None, **fields: Any) -> None:
        self.log_format = log_format
        self.fields = fields

    def __call__(self, event: LogEvent) -> bool:
        return (self.log_format is None or event.get("log_format") == self.log_format) and all(
            name in event and event[name] == value for name, value in self.fields.items()
        )

    def __repr__(self) -> str:
        arguments = ["%s=%r" % item for item in self.fields.items()]
        if self.log_format is not None:
            arguments.insert(0, repr(self.log_format))
        return "Logged(%s)" % (", ".join(arguments),)


class Says:
    """
    The log events whose message, formatted, contains C{text}.
    """

    def __init__(self, text: str) -> None:
        self.text = text

    def __call__(self, event: LogEvent) -> bool:
        return self.text in message(event)

    def __repr__(self) -> str:
        return "Says(%r)" % (self.text,)


class ProxyProcess:
    """
    A C{twistd -n} process running the proxy, with C{harness_events} as
    its log observer: its log events are read as data (L{events}). What it
    prints before its logging begins goes to a file (L{output}).

    @param args: what follows C{twistd -n --pidfile= --logger=...}:
        C{client-proxy} and its options, or C{-y proxy.tac}.
    @param env: variables added to the environment.
    @param workdir: its folder (for the log); by default a new temporary
        one, which L{remove} removes.
    """

    def __init__(
        self, args: list[str], env: dict[str, str] | None = None, workdir: Path | None = None
    ) -> None:
        self.args = args
        self.env = dict(os.environ, **(env or {}))
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="client-proxy-"))
        self.eventlog = EventLog(self.workdir / "events.json")
        self.outputfile = self.workdir / "output"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        """
        The command line: twistd, its log observer C{harness_events}.
        """
        return [TWISTD, "-n", "--pidfile=", "--logger=harness_events.observer", *self.args]

    def start(self) -> "ProxyProcess":
        self.eventlog.clear()
        env = dict(
            self.env,
            HARNESS_LOG_EVENTS=str(self.eventlog.path),
            PYTHONPATH=os.pathsep.join(filter(None, [str(OBSERVER_PATH), self.env.get("PYTHONPATH")])),
        )
        with open(self.outputfile, "wb") as output:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        return self

    def events(self) -> list[LogEvent]:
        """
        The log events so far, as dictionaries: C{log_format},
        C{log_namespace}, C{log_level}, the message's fields...
        """
        return self.eventlog.events()

    def log(self) -> str:
        """
        The log as text, as twistd writes it to a file.
        """
        return self.eventlog.text()

    def output(self) -> str:
        """
        What the process printed outside its log.
        """
        return self.outputfile.read_text(errors="replace")

    def wait_for_log_event(
        self, predicate: Callable[[LogEvent], bool], timeout: float = 10.0, count: int = 1
    ) -> LogEvent:
        """
        Wait until C{count} log events match C{predicate} (a L{Logged},
        say); the C{count}-th.

        @raise AssertionError: the process exited, or time was up, first.
        """
        deadline = time.monotonic() + timeout
        while True:
            exited = self.process.poll() is not None
            matching = [event for event in self.events() if predicate(event)]
            if len(matching) >= count:
                return matching[count - 1]
            if exited or time.monotonic() > deadline:
                raise AssertionError(
                    "%s %s of %r in the proxy's log%s:\n%s%s"
                    % (
                        len(matching),
                        "event" if len(matching) == 1 else "events",
                        predicate,
                        " (it exited with code %s)" % (self.process.returncode,) if exited else "",
                        self.log(),
                        self.output(),
                    )
                )
            time.sleep(0.02)

    def wait_for_log(self, text: str, timeout: float = 10.0, count: int = 1) -> LogEvent:
        """
        Wait until C{count} log messages contain C{text}; the C{count}-th.
        """
        return self.wait_for_log_event(Says(text), timeout, count)

    def listening_port(self, factory: str = "Site", timeout: float = 10.0) -> int:
        """
        The TCP port on which a server of the process listens, for one
        given port 0 in its endpoint: Twisted logs it as it starts
        listening (C{"Site starting on 41234"}, C{factory} being the class
        name of the server's factory), a text event without fields.
        """
        event = self.wait_for_log_event(Says(factory + " starting on "), timeout)
        return int(message(event).rpartition(" ")[2])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """
        Stop the process with C{sig} and return its exit code.
        """
        return processes.stop(self.process, sig, timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> "ProxyProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def remove(self) -> None:
        """
        Stop the process and remove its folder, log included.
        """
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def client_proxy(prosody, target: str, *options: str, secret: str | None = None) -> ProxyProcess:
    """
    A C{twistd client-proxy} process for the component of C{prosody}, with
    the secret in a file, as the README recommends.
    """
    component, real = next(iter(prosody.components.items()))
    proxy = ProxyProcess([])
    secret_file = proxy.workdir / "secret"
    secret_file.write_text((secret or real) + "\n")
    proxy.args = [
        "client-proxy",
        "--jid", component,
        "--target", target,
        "--secret-file", str(secret_file),
        "--endpoint", "tcp:host=127.0.0.1:port=%d" % (prosody.component_port,),
        *options,
    ]
    return proxy


def run_twistd(args: list[str], env: dict[str, str] | None = None, timeout: float = 20):
    """
    Run twistd to completion (for configuration errors): its exit code and
    everything it printed.
    """
    with tempfile.TemporaryDirectory(prefix="client-proxy-") as workdir:
        done = subprocess.run(
            [TWISTD, "-n", "--pidfile="] + args,
            env=dict(os.environ, **(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=workdir,
        )
    return done.returncode, done.stdout + done.stderr
