"""
A private ejabberd server (or a cluster of them) for integration tests and
benchmarks, on loopback ports, with the same shape as L{Prosody}.

How it runs (Debian's ejabberd 23.01; see /work/shared/FACTS.md):

  - C{ejabberdctl foreground} with a ctl config of its own (C{--ctl-config}:
    the stock one sets C{EJABBERD_CONFIG_PATH} to the system server's
    configuration), C{--logs}, C{--spool} and C{--node NAME@localhost}, all in
    a temporary folder. As root the processes run as the C{ejabberd} user
    (C{ejabberdctl} would otherwise C{su} to it itself), so that folder
    belongs to that user.
  - Erlang distribution: each server (or cluster) has an C{epmd} of its own
    on a free loopback port (C{ERL_EPMD_PORT}, C{-address 127.0.0.1}), which
    the harness starts as its child and ends by its pid: it never shares, or
    kills, the C{epmd} of port 4369 that other Erlang nodes of the machine
    use. The nodes get C{-start_epmd false}, a random cookie with
    C{-setcookie} (nothing in any home folder), and listen for distribution
    on 127.0.0.1 only.
  - Accounts: by default (C{auth="any"}) C{auth_method: external} with a
    tiny program that says yes to everything: any user name and password
    logs in (C{auth_use_cache: false}: the cache would hold the first
    password that worked), every account "exists", and rosters are stored
    in Mnesia (on disc in the spool), so a subscription sent to an account
    that has never logged in is kept, and rosters survive
    L{Ejabberd.restart}. With C{auth="internal"} accounts must be made with
    L{Ejabberd.register}.
  - Listeners: C{ejabberd_c2s} (no TLS required, PLAIN allowed) and
    C{ejabberd_service} (XEP-0114) for L{Ejabberd.components}, on
    127.0.0.1; no s2s listener and C{s2s_access: none}.

Unlike Prosody, ejabberd accepts several component connections for the same
host and spreads the stanzas for that host over them: by default each
stanza goes to one of them at random (preferring connections to the node
the stanza is routed on), requests, answers and presences alike. With
C{domain_balancing: {HOST: {type: bare_source, component_number: N}}} (see
C{extra_config}) the choice is a hash of the sender's bare JID over N slots
(connections beyond N get nothing); in 23.01 C{domain_balancing} without
C{component_number} makes every component connection for HOST crash at
the handshake.
"""

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from harness import processes
from harness.ports import PortTaken, listening, on_free_ports
from harness.processes import descendant

#: The user ejabberd runs as when the harness runs as root.
EJABBERD_USER = "ejabberd"
EJABBERDCTL = "ejabberdctl"
EPMD = "/usr/bin/epmd"

CONFIG = """\
# Written by harness/ejabberd.py
hosts:
  - "{domain}"
loglevel: {loglevel}
log_rotate_count: 0
{auth}
s2s_access: none
acme:
  auto: false
listen:
  -
    port: {c2s_port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: false
    max_stanza_size: 262144
  -
    port: {component_port}
    ip: "127.0.0.1"
    module: ejabberd_service
{componentTLS}    hosts:
{components}
{ownListeners}modules:
  mod_roster: {{}}
  mod_disco: {{}}
{extra}"""

#: A component listener for one host alone.
OWN_LISTENER = """\
  -
    port: {port}
    ip: "127.0.0.1"
    module: ejabberd_service
    hosts:
      {host}:
        password: {password}
"""

#: The ctl config: replaces /etc/default/ejabberd, which names the system
#: server's configuration.
CTL_CONFIG = """\
# Written by harness/ejabberd.py
EJABBERD_CONFIG_PATH={config}
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0 -start_epmd false -setcookie {cookie} -kernel inet_dist_use_interface {{127,0,0,1}}"
EJABBERD_BYPASS_WARNINGS=true
"""

#: An external authentication program (ejabberd's extauth protocol: each
#: request and answer is a 2-byte big-endian length and its bytes) that
#: answers "yes" to everything: auth, isuser, setpass, tryregister...
EXTAUTH = """\
import sys

stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
while True:
    head = stdin.read(2)
    if len(head) < 2:
        break
    stdin.read(int.from_bytes(head, "big"))
    stdout.write(b"\\x00\\x02\\x00\\x01")
    stdout.flush()
"""


def ejabberd_available() -> bool:
    """
    Whether C{ejabberdctl} and C{epmd} are installed, and servers are
    wanted (see L{harness.prosody.prosody_available}).
    """
    return (
        shutil.which(EJABBERDCTL) is not None
        and os.access(EPMD, os.X_OK)
        and not os.environ.get("TESTS_WITHOUT_SERVERS")
    )


def yaml_string(text: str) -> str:
    """
    C{text} as a double-quoted YAML string.
    """
    return '"%s"' % (text.replace("\\", "\\\\").replace('"', '\\"'),)


def _as_user() -> dict:
    """
    Popen arguments that run a child as the ejabberd user when we are root
    (C{ejabberdctl} refuses other users, and as root would C{su}).
    """
    if os.geteuid() == 0:
        return dict(user=EJABBERD_USER, group=EJABBERD_USER, extra_groups=[])
    return {}


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam(EJABBERD_USER)
        os.chown(path, user.pw_uid, user.pw_gid)


class Epmd:
    """
    A private Erlang port mapper on a free loopback port, a child process
    of ours: the nodes that use it are told its port with C{ERL_EPMD_PORT}.
    """

    def __init__(self) -> None:
        #: Chosen at the first start, kept at the next ones.
        self.port = 0
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        """
        Start epmd unless it runs, and wait until it listens on its port:
        the first time, one free at that moment, or another if that one is
        taken before epmd binds it.
        """
        if self.process is not None and self.process.poll() is None:
            return
        if self.port:
            self._start(timeout, self.port)
        else:
            on_free_ports(lambda port: self._start(timeout, port), 1)

    def _start(self, timeout: float, port: int) -> None:
        """
        Start epmd on C{port}, and wait until it listens there.

        @raise PortTaken: it exited first, as it does, quietly, when the
            port is taken.
        """
        self.port = port
        self.process = subprocess.Popen(
            [EPMD, "-port", str(self.port), "-address", "127.0.0.1"],
            **_as_user(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not listening(self.process.pid, self.port):
            if self.process.poll() is not None:
                raise PortTaken("epmd exited (code %s) before listening on port %d"
                                % (self.process.returncode, self.port))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("epmd did not listen on port %d in time" % (self.port,))
            time.sleep(0.02)

    def stop(self) -> None:
        """
        End this epmd, by its pid.
        """
        if self.process is not None:
            processes.stop(self.process, timeout=5)


class Ejabberd:
    """
    An ejabberd node serving L{domain}, with its users and external
    components (XEP-0114), Mnesia in a temporary folder of its own.

    @param components: component host -> secret; by default one component,
        C{proxy.example.org}, with a random secret.
    @param auth: C{"any"}: every user name and password is accepted (and
        every account exists); C{"internal"}: only accounts made with
        L{register}.
    @param epmd: the epmd to register with; by default one of its own,
        started and stopped with the server. Nodes of a cluster share one.
    @param cookie: the Erlang cookie; nodes of a cluster share one.
    @param name: the node's name (before C{@localhost}).
    @param extra_config: YAML added at the end of the configuration (top
        level), e.g. C{domain_balancing} for the component host.
    @param own_components: component hosts (host -> password) that each get
        a listener of their own, on the port in L{own_component_ports}:
        ejabberd routes the stanzas for every host of a listener to each
        connection authenticated on it, so a host that must reach one
        connection only needs a listener alone.
    @param component_certfile: a PEM file with a certificate and its key:
        the component listener then speaks TLS from the first byte
        (C{tls: true}), with that certificate.
    """

    domain = "example.org"

    def __init__(
        self,
        components: dict[str, str] | None = None,
        auth: str = "any",
        epmd: Epmd | None = None,
        cookie: str | None = None,
        name: str | None = None,
        loglevel: str = "info",
        extra_config: str = "",
        own_components: dict[str, str] | None = None,
        component_certfile: Path | None = None,
    ) -> None:
        if components is None:
            components = {"proxy." + self.domain: secrets.token_hex(16)}
        if auth not in ("any", "internal"):
            raise ValueError("auth is 'any' or 'internal', not %r" % (auth,))
        self.components = components
        self.auth = auth
        self.loglevel = loglevel
        self.extra_config = extra_config
        self.own_epmd = epmd is None
        self.epmd = epmd or Epmd()
        self.cookie = cookie or secrets.token_hex(16)
        self.node = "%s@localhost" % (name or "ejabberd-test-" + secrets.token_hex(4),)
        #: Chosen at the first start, kept at the next ones.
        self.c2s_port = 0
        self.component_port = 0
        self.own_components = own_components or {}
        self.component_certfile = component_certfile
        self.own_component_ports = {host: 0 for host in self.own_components}
        self.workdir = Path(tempfile.mkdtemp(prefix="ejabberd-"))
        self.config_file = self.workdir / "ejabberd.yml"
        self.ctl_config_file = self.workdir / "ejabberdctl.cfg"
        self.extauth_file = self.workdir / "extauth.py"
        self.spool = self.workdir / "spool"
        self.logs = self.workdir / "logs"
        self.console = self.workdir / "console.log"
        self.logfile = self.logs / "ejabberd.log"
        self.process: subprocess.Popen | None = None
        for path in (self.spool, self.logs):
            path.mkdir()
            _chown(path)
        _chown(self.workdir)

    def __repr__(self) -> str:
        return "<Ejabberd %s c2s=%d component=%d>" % (self.node, self.c2s_port, self.component_port)

    # Configuration

    def write_config(self) -> None:
        """
        Write ejabberd's configuration, the ctl config and the extauth
        program for the current ports and components.
        """
        if self.auth == "any":
            python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
            self.extauth_file.write_text(EXTAUTH)
            # No cache: it would remember the first password that worked
            # and refuse any other for that user.
            auth = "auth_method: external\nauth_use_cache: false\nextauth_program: %s" % (
                yaml_string("%s %s" % (python, self.extauth_file)),
            )
        else:
            auth = "auth_method: internal\nauth_password_format: plain"
        components = "".join(
            "      %s:\n        password: %s\n" % (yaml_string(host), yaml_string(secret))
            for host, secret in self.components.items()
        )
        self.config_file.write_text(
            CONFIG.format(
                domain=self.domain,
                loglevel=self.loglevel,
                auth=auth,
                c2s_port=self.c2s_port,
                component_port=self.component_port,
                components=components.rstrip("\n"),
                componentTLS=self._component_tls(),
                ownListeners="".join(
                    OWN_LISTENER.format(
                        port=self.own_component_ports[host],
                        host=yaml_string(host),
                        password=yaml_string(secret),
                    )
                    for host, secret in self.own_components.items()
                ),
                extra=self.extra_config,
            )
        )
        self.ctl_config_file.write_text(CTL_CONFIG.format(config=self.config_file, cookie=self.cookie))

    def _component_tls(self) -> str:
        """
        The TLS options of the component listener: the certificate is
        copied where the ejabberd user can read it.
        """
        if self.component_certfile is None:
            return ""
        certfile = self.workdir / "component.pem"
        shutil.copyfile(self.component_certfile, certfile)
        _chown(certfile)
        return "    tls: true\n    certfile: %s\n" % (yaml_string(str(certfile)),)

    def _command(self, *args: str) -> list[str]:
        return [
            EJABBERDCTL,
            "--ctl-config", str(self.ctl_config_file),
            "--logs", str(self.logs),
            "--spool", str(self.spool),
            "--node", self.node,
            *args,
        ]

    def _env(self) -> dict[str, str]:
        return dict(
            os.environ,
            HOME=str(self.workdir),
            ERL_EPMD_PORT=str(self.epmd.port),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )

    # Running

    def start(self, timeout: float = 30.0) -> None:
        """
        Start ejabberd in the foreground (its epmd first if it has its own),
        and wait until it listens on its ports. The first time, on ports
        free at that moment, and on others if a port is taken before
        ejabberd binds it; after that, on the same ports, which the
        proxies know.

        @raise RuntimeError: ejabberd exited or was not listening in time;
            the message has its output and the end of its log.
        @raise PortTaken: a port was taken, every time (the first start), or
            is taken (the next ones).
        """
        if self.own_epmd:
            self.epmd.start()
        try:
            if self.c2s_port:
                self._start(timeout)
            else:
                on_free_ports(lambda *ports: self._start(timeout, *ports), len(self.ports()))
        except BaseException:
            if self.own_epmd:
                self.epmd.stop()
            raise

    def _start(self, timeout: float, *ports: int) -> None:
        """
        Start ejabberd on C{ports} (c2s, component, then those of
        L{own_components}; by default its own), and wait until it listens
        on them.
        """
        if ports:
            self.c2s_port, self.component_port, *own = ports
            self.own_component_ports = dict(zip(self.own_components, own))
        self.write_config()
        logged, printed = processes.file_size(self.logfile), processes.file_size(self.console)
        with open(self.console, "ab") as console:
            self.process = subprocess.Popen(
                self._command("foreground"),
                cwd=self.workdir,
                env=self._env(),
                **_as_user(),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.wait_started(timeout, logged)
        except RuntimeError:
            if "eaddrinuse" in self.console_output(printed):
                raise PortTaken("ejabberd %s: a port is taken (eaddrinuse)" % (self.node,))
            raise

    def ports(self) -> list[int]:
        """
        Every port ejabberd listens on.
        """
        return [self.c2s_port, self.component_port, *self.own_component_ports.values()]

    def wait_started(self, timeout: float, since: int) -> None:
        """
        Wait until ejabberd says in its log, after byte C{since}, that it
        has started (its modules loaded, its tables made: stopped while it
        makes them, it takes some 13 s to stop), and listens on all its
        L{ports}.

        @raise RuntimeError: ejabberd exited, or had not started in time.
        """
        deadline = time.monotonic() + timeout
        while not (
            " is started in the node " in self.log(since)
            and all(listening(self.process.pid, port) for port in self.ports())
        ):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self._terminate()
                self._wait_stopped(15.0)
                raise RuntimeError(
                    "ejabberd %s did not start (exit code %s):\n%s\n--- log tail ---\n%s"
                    % (self.node, self.process.returncode, self.console_output()[-5000:], self.log()[-5000:])
                )
            time.sleep(0.05)

    def beam_pid(self) -> int | None:
        """
        The pid of the Erlang VM (C{beam.smp}): a child of C{ejabberdctl},
        which stays its parent.
        """
        if self.process is None or self.process.poll() is not None:
            return None
        return descendant(self.process.pid, "beam")

    def stop(self, timeout: float = 15.0) -> None:
        """
        Stop ejabberd: SIGTERM to the Erlang VM (a clean shutdown), then
        SIGKILL to its process group if it has not exited in time; then
        end its own epmd, if it has one.
        """
        self._terminate()
        self._wait_stopped(timeout)
        if self.own_epmd:
            self.epmd.stop()

    def _terminate(self) -> None:
        """
        Ask the Erlang VM to shut down (SIGTERM: a clean C{init:stop()}).
        """
        if self.process is not None and self.process.poll() is None:
            beam = self.beam_pid()
            if beam is not None:
                os.kill(beam, signal.SIGTERM)
            else:
                os.killpg(self.process.pid, signal.SIGTERM)

    def _wait_stopped(self, timeout: float) -> None:
        """
        Wait for C{ejabberdctl} to exit; SIGKILL its process group if it
        has not in time.
        """
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def restart(self) -> None:
        """
        Stop and start again on the same ports. Mnesia is on disc in the
        spool: rosters and accounts are kept.
        """
        self.stop()
        self.start()

    def ctl(self, *args: str, check: bool = True, timeout: float = 60.0) -> str:
        """
        Run C{ejabberdctl ARGS} against this node and return its output.

        @raise RuntimeError: it failed, and C{check} is true.
        """
        done = subprocess.run(
            self._command(*args),
            cwd=self.workdir,
            env=self._env(),
            **_as_user(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = done.stdout + done.stderr
        if check and done.returncode != 0:
            raise RuntimeError("ejabberdctl %s failed (exit code %d): %s" % (" ".join(args), done.returncode, output))
        return output

    def register(self, user: str, password: str = "pw") -> None:
        """
        Make the account C{user@example.org}. With C{auth="any"} every
        account exists already: nothing to do.
        """
        if self.auth == "any":
            return
        self.ctl("register", user, self.domain, password)

    def join(self, other: "Ejabberd", timeout: float = 60.0) -> None:
        """
        Join C{other}'s cluster (C{ejabberdctl join_cluster}): Mnesia is
        then shared, and this node restarts its ejabberd; wait until it
        listens again. Both nodes must share an epmd and a cookie.
        """
        if other.epmd.port != self.epmd.port or other.cookie != self.cookie:
            raise ValueError("%r and %r do not share an epmd and a cookie" % (self, other))
        logged = processes.file_size(self.logfile)
        self.ctl("join_cluster", other.node, timeout=timeout)
        self.wait_started(timeout, logged)

    def cluster_nodes(self) -> list[str]:
        """
        The nodes of this node's cluster (C{ejabberdctl list_cluster}).
        """
        return sorted(word.strip("'") for word in self.ctl("list_cluster").split())

    # Logs

    def log(self, since: int = 0) -> str:
        """
        The text of ejabberd's log, from byte C{since} on.
        """
        return processes.text_from(self.logfile, since)

    def console_output(self, since: int = 0) -> str:
        """
        What C{ejabberdctl foreground} printed, from byte C{since} on.
        """
        return processes.text_from(self.console, since)

    def remove(self) -> None:
        """
        Stop ejabberd and remove its folder.
        """
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Ejabberd":
        try:
            self.start()
        except BaseException:
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


class EjabberdCluster:
    """
    C{size} ejabberd nodes on loopback, clustered (shared Mnesia, one vhost
    L{domain}), each with its own c2s and component ports. They share one
    private epmd and one cookie. L{nodes}[0] is the first; the others join
    it.

    Like L{Ejabberd}, the cluster has L{components}, L{c2s_port} and
    L{component_port} (those of its first node), so that it can stand
    wherever a server is expected.
    """

    domain = Ejabberd.domain

    def __init__(
        self,
        size: int = 2,
        components: dict[str, str] | None = None,
        auth: str = "any",
        own_components: list[dict[str, str]] | None = None,
    ) -> None:
        if components is None:
            components = {"proxy." + self.domain: secrets.token_hex(16)}
        self.components = components
        self.epmd = Epmd()
        cookie = secrets.token_hex(16)
        tag = secrets.token_hex(3)
        self.nodes = [
            Ejabberd(
                components,
                auth=auth,
                epmd=self.epmd,
                cookie=cookie,
                name="ejabberd%d-%s" % (i + 1, tag),
                own_components=own_components[i] if own_components else None,
            )
            for i in range(size)
        ]

    @property
    def c2s_port(self) -> int:
        return self.nodes[0].c2s_port

    @property
    def component_port(self) -> int:
        return self.nodes[0].component_port

    def start(self) -> None:
        """
        Start the epmd and every node, then join every node to the first.
        """
        self.epmd.start()
        try:
            for node in self.nodes:
                node.start()
            for node in self.nodes[1:]:
                node.join(self.nodes[0])
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """
        Stop every node (all at once), then the epmd.
        """
        for node in self.nodes:
            node._terminate()
        for node in self.nodes:
            node._wait_stopped(15.0)
        self.epmd.stop()

    def register(self, user: str, password: str = "pw") -> None:
        """
        Make an account (Mnesia is shared: once for the cluster).
        """
        self.nodes[0].register(user, password)

    def log(self) -> str:
        return "".join("=== %s ===\n%s" % (node.node, node.log()) for node in self.nodes)

    def __enter__(self) -> "EjabberdCluster":
        try:
            self.start()
        except BaseException:
            for node in self.nodes:
                shutil.rmtree(node.workdir, ignore_errors=True)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        for node in self.nodes:
            shutil.rmtree(node.workdir, ignore_errors=True)
