"""
A private Prosody server for integration tests, on loopback ports.
"""

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from harness import processes
from harness.ports import PortTaken, listening, on_free_ports

#: The user Prosody runs as: it refuses to run as root.
PROSODY_USER = "prosody"

CONFIG = """\
-- Written by harness/prosody.py
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s_port} }}
component_ports = {{ {component_port} }}
component_interface = "127.0.0.1"
s2s_ports = {{ }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
storage = "memory"
authentication = "insecure"
insecure_open_authentication = "Yes please, I know what I'm doing!"
modules_enabled = {{ "roster", "saslauth", "disco" }}
modules_disabled = {{ "s2s", "s2s_auth_certs" }}
data_path = {workdir}
pidfile = {pidfile}
log = {{ debug = {logfile} }}

VirtualHost "{domain}"
{components}
"""


def prosody_available() -> bool:
    """
    Whether the C{prosody} binary is on C{PATH}, and servers are wanted:
    C{TESTS_WITHOUT_SERVERS} set runs only the tests that need none
    (scripts/test-lowest).
    """
    return shutil.which("prosody") is not None and not os.environ.get("TESTS_WITHOUT_SERVERS")


def lua_string(text: str) -> str:
    """
    C{text} as a Lua string literal.
    """
    return '"%s"' % (text.replace("\\", "\\\\").replace('"', '\\"'),)


class Prosody:
    """
    A Prosody process serving L{domain} with its users (any name and
    password is accepted) and external components (XEP-0114), with memory
    storage, in a temporary folder of its own.

    @param components: component host -> secret; by default one component,
        C{proxy.example.org}, with a random secret.
    @ivar hostile: the host and secret of one more component, always
        declared, C{evil.example.org}: a hostile domain whose users the
        tests invent at will (C{tests/support/hostile.py}). It is not in
        L{components}, which are for proxies.
    """

    domain = "example.org"

    def __init__(self, components: dict[str, str] | None = None) -> None:
        if components is None:
            components = {"proxy." + self.domain: secrets.token_hex(16)}
        self.components = components
        self.hostile = ("evil." + self.domain, secrets.token_hex(16))
        #: Chosen at the first start, kept at the next ones.
        self.c2s_port = 0
        self.component_port = 0
        self.workdir = Path(tempfile.mkdtemp(prefix="prosody-"))
        self.config_file = self.workdir / "prosody.cfg.lua"
        self.logfile = self.workdir / "prosody.log"
        self.process: subprocess.Popen | None = None
        user = pwd.getpwnam(PROSODY_USER)
        os.chown(self.workdir, user.pw_uid, user.pw_gid)

    def write_config(self) -> None:
        """
        Write the configuration file for the current ports and components.
        """
        components = "".join(
            "\nComponent %s\n    component_secret = %s\n" % (lua_string(host), lua_string(secret))
            for host, secret in [*self.components.items(), self.hostile]
        )
        self.config_file.write_text(
            CONFIG.format(
                c2s_port=self.c2s_port,
                component_port=self.component_port,
                workdir=lua_string(str(self.workdir)),
                pidfile=lua_string(str(self.workdir / "prosody.pid")),
                logfile=lua_string(str(self.logfile)),
                domain=self.domain,
                components=components,
            )
        )

    def start(self, timeout: float = 10.0) -> None:
        """
        Start Prosody in the foreground (as the C{prosody} user when run as
        root: it refuses to run as root), and wait until it listens on both
        its ports. The first time, on ports free at that moment, and on
        others if a port is taken before Prosody binds it; after that, on
        the same ports, which the proxies know.

        @raise RuntimeError: Prosody exited, or was not listening in time;
            the message has its output and the end of its log.
        @raise PortTaken: a port was taken, every time (the first start), or
            is taken (the next ones).
        """
        if os.environ.get("TESTS_WITHOUT_SERVERS"):
            import pytest

            pytest.skip("needs Prosody: TESTS_WITHOUT_SERVERS is set")
        if self.c2s_port:
            self._start(timeout)
        else:
            on_free_ports(lambda c2s, component: self._start(timeout, c2s, component), 2)

    def _start(self, timeout: float, c2s_port: int = 0, component_port: int = 0) -> None:
        """
        Start Prosody on these ports (by default, its own), and wait until
        it listens on them.

        @raise PortTaken: Prosody found one taken (Prosody says so in its
            log and goes on without it).
        """
        self.c2s_port = c2s_port or self.c2s_port
        self.component_port = component_port or self.component_port
        self.write_config()
        logged = processes.file_size(self.logfile)
        # Not `runuser`: on SIGTERM it sleeps 2 s before it exits.
        as_user = {}
        if os.geteuid() == 0:
            as_user = dict(user=PROSODY_USER, group=PROSODY_USER, extra_groups=[])
        self.process = subprocess.Popen(
            ["prosody", "-F", "--config", str(self.config_file)],
            cwd=self.workdir,
            **as_user,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        ports = (self.c2s_port, self.component_port)
        deadline = time.monotonic() + timeout
        while not all(listening(self.process.pid, port) for port in ports):
            taken = [
                line for line in self.log(since=logged).splitlines()
                if "Failed to open server port" in line and "in use" in line
            ]
            if taken:
                self.stop()
                self.process.stdout.close()
                raise PortTaken("\n".join(taken))
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                output = self.process.stdout.read().decode(errors="replace")
                raise RuntimeError(
                    "Prosody did not start (exit code %s):\n%s\n--- log tail ---\n%s"
                    % (self.process.returncode, output, self.log()[-5000:])
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """
        Stop Prosody: SIGTERM, then SIGKILL if it has not exited in time.
        """
        if self.process is not None:
            processes.stop(self.process, timeout=timeout)

    def restart(self) -> None:
        """
        Stop and start again on the same ports. Memory storage: rosters and
        everything else stored are lost.
        """
        self.stop()
        self.process.stdout.close()
        self.start()

    def log(self, since: int = 0) -> str:
        """
        The text of Prosody's debug log, from byte C{since} on.
        """
        return processes.text_from(self.logfile, since)

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 10.0) -> None:
        """
        Wait until C{text} appears C{count} times in the log. Prosody's
        debug log shows, among others, the stanzas it receives, and those
        it has no handler for (what an external component sends the
        server: C{"Unhandled component stanza: iq; xmlns=urn:xmpp:ping"}).

        @raise AssertionError: not in time.
        """
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    "%r is in Prosody's log %d times, not %d:\n%s"
                    % (text, self.log().count(text), count, self.log()[-5000:])
                )
            time.sleep(0.02)

    def __enter__(self) -> "Prosody":
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """
        Stop Prosody and remove its folder.
        """
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
