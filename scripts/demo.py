"""
client-proxy end to end, on this machine, in a few seconds.

Starts a private Prosody (loopback ports, any user name and password
accepted), the proxy (`twistd -n client-proxy`), two implementing clients
(examples/implementing_client.py, resources worker-1 and worker-2 of
service@example.org) and a requester (examples/requester.py) that sends
echo requests to proxy.example.org. Shows one request stanza by stanza, as
the programs sent and received them, and which resource served each
request. Stops everything, also on Ctrl-C or an error; exits non-zero with
the relevant log if a step fails.

Run it with scripts/demo (which prepares the machine first), or with the
virtualenv's Python: .venv/bin/python scripts/demo.py.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import processes  # noqa: E402
from harness.prosody import Prosody, prosody_available  # noqa: E402
from harness.proxy import ProxyProcess  # noqa: E402

EXAMPLES = ROOT / "examples"
COMPONENT = "proxy.example.org"
TARGET = "service@example.org"
WORKERS = ("worker-1", "worker-2")
REQUESTER = "alice@example.org/requester"
#: A line of --show-stanzas output: "[prefix: ]SEND|RECV <xml>".
STANZA_LINE = re.compile(r"^(?:\S+: )?(SEND|RECV) (<.*)$")
#: The timestamp and log system twistd puts before each message.
TWISTD_PREFIX = re.compile(r"^\S+ \[[^\]]*\] ")


class DemoFailed(Exception):
    """
    A step failed; C{logs} are (name, text) pairs worth showing.
    """

    def __init__(self, message: str, *logs: tuple[str, str]) -> None:
        super().__init__(message)
        self.logs = logs


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:]) or "(empty)"


def say(text: str = "") -> None:
    print(text, flush=True)


class Worker:
    """
    One implementing client, as a subprocess printing its log (and its
    stanzas) to a file.
    """

    def __init__(self, resource: str, workdir: Path, port: int, password_file: Path) -> None:
        self.jid = "%s/%s" % (TARGET, resource)
        self.logfile = workdir / (resource + ".log")
        with open(self.logfile, "wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable, str(EXAMPLES / "implementing_client.py"),
                    "--jid", self.jid, "--password-file", str(password_file),
                    "--host", "127.0.0.1", "--port", str(port), "--no-tls",
                    "--component", COMPONENT, "--show-stanzas",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def stop(self) -> None:
        processes.stop(self.process, timeout=5)


def stanzas(output: str) -> list[tuple[str, str, ET.Element]]:
    """
    The (SEND or RECV, text, parsed) stanzas in C{--show-stanzas} output.
    """
    found = []
    for line in output.splitlines():
        match = STANZA_LINE.match(line)
        if match:
            try:
                found.append((match[1], match[2], ET.fromstring(match[2])))
            except ET.ParseError:
                pass
    return found


def find(output: str, direction: str, stanza_id: str) -> str | None:
    """
    The text of the IQ with id C{stanza_id} sent or received in C{output}.
    """
    for seen, text, el in stanzas(output):
        if seen == direction and el.tag.endswith("iq") and el.get("id") == stanza_id:
            return text
    return None


def wait_for(what, ready, processes, timeout: float, logs) -> None:
    """
    Poll C{ready()} until true; fail, with the logs C{logs()} returns, if
    time is up or one of the C{(name, Popen)} C{processes} exited.
    C{what} is waited for: text, or a function giving the text.
    """
    deadline = time.monotonic() + timeout
    what = what if callable(what) else (lambda what=what: what)
    while not ready():
        for name, process in processes:
            if process.poll() is not None:
                raise DemoFailed(
                    "%s exited (code %s) while waiting for %s" % (name, process.returncode, what()),
                    *logs(),
                )
        if time.monotonic() > deadline:
            raise DemoFailed("no %s after %g s" % (what(), timeout), *logs())
        time.sleep(0.05)


def proxy_messages(proxy: ProxyProcess, pattern: str) -> list[str]:
    """
    The proxy's log messages containing C{pattern}, without timestamps.
    """
    return [TWISTD_PREFIX.sub("", line) for line in proxy.log().splitlines() if pattern in line]


def run_demo(count: int, workdir: Path, cleanup: list) -> None:
    say("client-proxy demo: one address, %s, in front of every online resource of %s" % (COMPONENT, TARGET))
    say()

    # 1. The XMPP server.
    if not prosody_available():
        raise DemoFailed("prosody is not installed: run scripts/demo, which installs it (as root)")
    prosody = Prosody()
    cleanup.append(prosody.__exit__)
    try:
        prosody.start()
    except RuntimeError as e:
        raise DemoFailed(str(e))
    (secret,) = prosody.components.values()
    say("1. Prosody for example.org on 127.0.0.1, in %s" % (prosody.workdir,))
    say("   client port %d, component port %d; any user name and password are accepted"
        % (prosody.c2s_port, prosody.component_port))

    def server_log():
        return ("Prosody's log", tail(prosody.log()))

    # 2. The proxy, the secret in a file only its owner can read.
    secret_file = workdir / "component-secret"
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    args = [
        "client-proxy", "--jid", COMPONENT, "--target", TARGET,
        "--secret-file", str(secret_file),
        "--endpoint", "tcp:host=127.0.0.1:port=%d" % (prosody.component_port,),
        "--strategy", "round-robin",
    ]
    proxy = ProxyProcess(args)
    cleanup.append(lambda *exc: shutil.rmtree(proxy.workdir, ignore_errors=True))
    say()
    say("2. The proxy:")
    say("   twistd -n client-proxy --jid %s --target %s \\" % (COMPONENT, TARGET))
    say("       --secret-file %s --endpoint %s \\" % (secret_file, args[-3]))
    say("       --strategy round-robin    # the resources take turns")
    proxy.start()
    cleanup.append(lambda *exc: proxy.stop())

    def proxy_log():
        return ("the proxy's log", tail(proxy.log()))

    wait_for("authentication of the proxy", lambda: "Authenticated as" in proxy.log(),
             [("Prosody", prosody.process), ("the proxy", proxy.process)], 15,
             lambda: (proxy_log(), server_log()))
    for line in proxy_messages(proxy, "Authenticated as") + proxy_messages(proxy, "Asking"):
        say("   proxy log: " + line)

    # 3. The implementing clients.
    password_file = workdir / "password"
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("demo-password\n")
    say()
    say("3. Two implementing clients (examples/implementing_client.py) log in as")
    say("   %s." % (" and ".join("%s/%s" % (TARGET, w) for w in WORKERS),))
    say("   The first to see the proxy's presence subscription request approves it (once")
    say("   is enough: the server keeps it); then the proxy sees both online:")
    workers = []
    for resource in WORKERS:
        worker = Worker(resource, workdir, prosody.c2s_port, password_file)
        workers.append(worker)
        cleanup.append(lambda *exc, worker=worker: worker.stop())

    def worker_logs():
        return tuple(("the log of %s" % (w.jid,), tail(w.log())) for w in workers)

    online = ["Resource online: %s" % (w.jid,) for w in workers]

    def missing() -> str:
        log = proxy.log()
        return " or ".join(repr(text) for text in online if text not in log) + " in the proxy's log"

    wait_for(missing, lambda: all(text in proxy.log() for text in online),
             [("Prosody", prosody.process), ("the proxy", proxy.process)]
             + [(w.jid, w.process) for w in workers], 15,
             lambda: (proxy_log(),) + worker_logs() + (server_log(),))
    for line in proxy_messages(proxy, "approved the presence") + proxy_messages(proxy, "Resource online"):
        say("   proxy log: " + line)

    # 4. Requests.
    say()
    say("4. A requester (examples/requester.py), %s, sends %d echo request%s"
        % (REQUESTER, count, "" if count == 1 else "s"))
    say("   to %s:" % (COMPONENT,))
    served: dict[str, int] = {}
    try:
        done = subprocess.run(
            [
                sys.executable, str(EXAMPLES / "requester.py"),
                "--jid", REQUESTER, "--password-file", str(password_file),
                "--host", "127.0.0.1", "--port", str(prosody.c2s_port), "--no-tls",
                "--to", COMPONENT, "--count", str(count), "--text", "hello",
                "--id-prefix", "echo-", "--timeout", "5", "--show-stanzas",
            ],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        )
    except subprocess.TimeoutExpired as e:
        raise DemoFailed(
            "the requester did not finish in %g s" % (e.timeout,), proxy_log(), *worker_logs()
        )
    shown = [line for line in done.stdout.splitlines() if not STANZA_LINE.match(line)]
    for line in shown:
        say("   " + line)
    if done.returncode != 0:
        raise DemoFailed(
            "the requester failed (exit code %d)" % (done.returncode,),
            ("the requester's output", tail(done.stdout + done.stderr)), proxy_log(), *worker_logs(),
        )
    first_output = done.stdout
    for line in shown:
        match = re.match(r"\s*\d+\s+(\S+/\S+)\s", line)
        if match:
            served[match[1]] = served.get(match[1], 0) + 1

    # 5. One request, stanza by stanza.
    stanza_id = "echo-1"
    answer = find(first_output, "RECV", stanza_id)
    served_by = answer and ET.fromstring(answer).find("{urn:example:echo}echo").get("served-by")
    serving = next((w for w in workers if w.jid == served_by), None)
    if serving is None:
        raise DemoFailed("no answer to request %s names its server" % (stanza_id,), *worker_logs())
    exchange = [
        ("requester -> %s, as the requester sent it (the server adds from=)" % (COMPONENT,),
         find(first_output, "SEND", stanza_id)),
        ("%s -> %s, as the implementing client received it" % (COMPONENT, serving.jid),
         find(serving.log(), "RECV", stanza_id)),
        ("%s -> %s, as the implementing client sent it" % (serving.jid, COMPONENT),
         find(serving.log(), "SEND", stanza_id)),
        ("%s -> requester, as the requester received it" % (COMPONENT,),
         find(first_output, "RECV", stanza_id)),
    ]
    say()
    say("5. Request %s, stanza by stanza, as the programs printed them with --show-stanzas:" % (stanza_id,))
    for n, (title, text) in enumerate(exchange, 1):
        if text is None:
            raise DemoFailed(
                "stanza %d of request %s was not logged: %s" % (n, stanza_id, title), *worker_logs()
            )
        say()
        say("   (%d) %s" % (n, title))
        say("       " + text)
    say()
    say("   The implementing client answers proxy.example.org/<requester>, the address it was")
    say("   asked from; the proxy sends the answer on to the requester, from %s." % (COMPONENT,))

    # 6. What the implementing clients logged.
    say()
    say("6. The implementing clients' logs (without the stanzas):")
    for worker in workers:
        for line in worker.log().splitlines():
            if not STANZA_LINE.match(line):
                say("   " + line)

    # 7. Who served.
    say()
    say("7. Served by: " + ", ".join("%s (%d)" % (jid, n) for jid, n in sorted(served.items())))
    missing = [w.jid for w in workers if w.jid not in served]
    if missing:
        raise DemoFailed("%s served no request" % (", ".join(missing),), proxy_log())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=6, help="echo requests to send (default: %(default)s)")
    args = parser.parse_args()

    def terminated(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    # Even if started with SIGINT ignored (a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="client-proxy-demo-"))
    cleanup: list = [lambda *exc: shutil.rmtree(workdir, ignore_errors=True)]
    code = 0
    try:
        run_demo(args.count, workdir, cleanup)
    except DemoFailed as e:
        code = 1
        for name, text in e.logs:
            print("\n--- end of %s ---\n%s" % (name, text), file=sys.stderr)
        print("\ndemo: FAILED: %s" % (e,), file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
        print("\ndemo: interrupted", file=sys.stderr)
    finally:
        # Ignore a second Ctrl-C while stopping: leave nothing running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        say()
        say("Stopping the implementing clients, the proxy and Prosody...")
        for stop in reversed(cleanup):
            try:
                stop(None, None, None)
            except Exception as e:  # keep stopping the others
                print("demo: while stopping: %r" % (e,), file=sys.stderr)
    if code == 0:
        say("Done in %.1f s." % (time.monotonic() - started,))
    return code


if __name__ == "__main__":
    sys.exit(main())
