"""
What the benchmarks share: a cheap load generator and process meters.

The clients here are plain blocking sockets with expat, no Twisted and no
threads, so that the load generator costs little next to the server and the
component it measures; each client runs in a process of its own, so that a
requester and a responder never share a GIL.

Also here: reading a process's CPU time and resident memory from C{/proc},
and the setup every benchmark needs (a private Prosody, the component as a
C{twistd client-proxy} process of the installed package), or a private
ejabberd instead (C{SERVERS}, L{make_server}, L{server_pid}).
"""

import base64
import os
import re
import shutil
import socket
import sys
import time
import xml.parsers.expat
from pathlib import Path
from xml.sax.saxutils import quoteattr

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.ejabberd import Ejabberd, ejabberd_available  # noqa: E402
from harness.processes import descendant  # noqa: E402
from harness.prosody import Prosody, prosody_available  # noqa: E402
from harness.proxy import TWISTD, ProxyProcess, client_proxy  # noqa: E402

__all__ = [
    "Ejabberd",
    "ejabberd_available",
    "Prosody",
    "ProxyProcess",
    "client_proxy",
    "prosody_available",
    "TWISTD",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")
DOMAIN = "example.org"
#: The implementing client's account.
TARGET = "service@" + DOMAIN
NS_STREAMS = "http://etherx.jabber.org/streams"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"


# Process meters


def cpu_seconds(pid: int) -> float:
    """
    The CPU time (user + system) C{pid} has used so far, in seconds;
    resolution 1/CLK_TCK (10 ms).
    """
    with open("/proc/%d/stat" % (pid,)) as f:
        data = f.read()
    # The command name, in parentheses, may hold spaces: split after it.
    fields = data[data.rindex(")") + 2 :].split()
    # Fields 14 and 15 of proc(5), counted from 1; here the list starts at
    # field 3.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    """
    The resident set size of C{pid} (C{VmRSS}), in bytes.
    """
    with open("/proc/%d/status" % (pid,)) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS for %d" % (pid,))


def prosody_pid(prosody: Prosody) -> int:
    """
    The pid of the Lua process that is Prosody.

    C{Prosody} starts C{prosody} directly (a C{#!/usr/bin/env lua} script, so
    the pid is already Lua's); should a wrapper such as C{runuser} sit in
    between, its descendants are searched for the Lua process.
    """
    pid = descendant(prosody.process.pid, "lua")
    if pid is None:
        raise RuntimeError("no Lua process under pid %d" % (prosody.process.pid,))
    return pid


def prosody_version(package: str = "prosody") -> str:
    """
    The Debian version of C{package} (C{prosody} by default).
    """
    try:
        import subprocess

        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return out.strip() or "?"
    except Exception:
        return "?"


#: The servers a benchmark can run against: name -> (class, installed?).
SERVERS = {
    "prosody": (Prosody, prosody_available),
    "ejabberd": (Ejabberd, ejabberd_available),
}


def numbers(text: str) -> list[int]:
    """
    A list of numbers written C{2,100,1_000} or C{2:100:1000}, for a
    benchmark's axis.
    """
    return [int(n) for n in re.split(r"[,:]", text) if n.strip()]


def make_server(name: str):
    """
    A private server of kind C{name} (C{prosody} or C{ejabberd}), not
    started yet: use it as a context manager. Both accept any user name
    and password and serve example.org with the component
    C{proxy.example.org}.
    """
    cls, _ = SERVERS[name]
    return cls()


def server_available(name: str) -> bool:
    return SERVERS[name][1]()


def server_version(name: str) -> str:
    return prosody_version(name)


def ejabberd_pid(ejabberd: Ejabberd) -> int:
    """
    The pid of ejabberd's Erlang VM (C{beam.smp}, every scheduler thread
    of it), under C{ejabberdctl}.
    """
    pid = ejabberd.beam_pid()
    if pid is None:
        raise RuntimeError("no beam process under pid %d" % (ejabberd.process.pid,))
    return pid


def server_pid(server) -> int:
    """
    The pid of the process that is the server: Prosody's Lua process or
    ejabberd's C{beam.smp}.
    """
    if isinstance(server, Ejabberd):
        return ejabberd_pid(server)
    return prosody_pid(server)


def start_component(prosody: Prosody, *options: str, wait: float = 30.0) -> ProxyProcess:
    """
    Start C{twistd -n client-proxy} for C{prosody}'s component with the
    target L{TARGET}, and wait until it knows a resource of the target
    (the responder must be online and approve the subscription).
    """
    proxy = client_proxy(prosody, TARGET, *options).start()
    proxy.wait_for_log("Resource online", timeout=wait)
    return proxy


def stop_component(proxy: ProxyProcess, sig=None) -> None:
    """
    Stop the component and remove its folder.
    """
    if sig is None:
        proxy.stop()
    else:
        proxy.stop(sig)
    shutil.rmtree(proxy.workdir, ignore_errors=True)


# A raw XMPP client


class StanzaReader:
    """
    Incremental stream parser: collects each top-level stanza as a list
    C{[name, attributes, first child's name, error condition]}, without
    building a tree or keeping any text.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """
        A new parser, for a new stream (after SASL success).
        """
        parser = xml.parsers.expat.ParserCreate()
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        self._parser = parser
        self._depth = 0
        self._current = None
        self._inError = False
        self.stanzas: list[list] = []
        self.closed = False

    def _start(self, name: str, attrs: dict) -> None:
        self._depth += 1
        depth = self._depth
        if depth == 2:
            self._current = [name, attrs, None, None]
        elif depth == 3:
            if self._current[2] is None:
                self._current[2] = name
            self._inError = name == "error"
        elif depth == 4 and self._inError and self._current[3] is None and name != "text":
            self._current[3] = name

    def _end(self, name: str) -> None:
        self._depth -= 1
        if self._depth == 1:
            self.stanzas.append(self._current)
        elif self._depth == 0:
            self.closed = True

    def feed(self, data: bytes) -> None:
        self._parser.Parse(data, False)

    def take(self) -> list[list]:
        stanzas = self.stanzas
        self.stanzas = []
        return stanzas


def _send(sock: socket.socket, text: str) -> None:
    sock.sendall(text.encode("utf-8"))


def _wait(sock: socket.socket, reader: StanzaReader, predicate) -> list:
    """
    The first stanza (read already or to come) that matches C{predicate}.
    """
    while True:
        for stanza in reader.stanzas:
            if predicate(stanza):
                reader.stanzas.remove(stanza)
                return stanza
        if reader.closed:
            raise RuntimeError("the server ended the stream")
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("the server closed the connection")
        reader.feed(data)


def _header(sock: socket.socket) -> None:
    _send(
        sock,
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client'"
        " xmlns:stream='%s' to='%s' version='1.0'>" % (NS_STREAMS, DOMAIN),
    )


def login(
    port: int, user: str, resource: str, presence: bool = True
) -> tuple[socket.socket, StanzaReader, str]:
    """
    Log in to the server's c2s port as C{user@example.org/resource} (SASL
    PLAIN, resource binding, roster retrieval so that subscription requests
    are delivered, initial presence if C{presence}).

    @return: the socket, its reader (which may hold stanzas received
        already) and the full JID.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = StanzaReader()
    _header(sock)
    _wait(sock, reader, lambda s: s[0] == "stream:features")
    credentials = base64.b64encode(("\0%s\0pw" % (user,)).encode()).decode()
    _send(sock, "<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, credentials))
    outcome = _wait(sock, reader, lambda s: s[0] in ("success", "failure"))
    if outcome[0] != "success":
        raise RuntimeError("authentication failed for %s" % (user,))
    reader.reset()
    _header(sock)
    _wait(sock, reader, lambda s: s[0] == "stream:features")
    _send(
        sock,
        "<iq type='set' id='bind'><bind xmlns='%s'><resource>%s</resource></bind></iq>"
        % (NS_BIND, resource),
    )
    bound = _wait(sock, reader, lambda s: s[0] == "iq" and s[1].get("id") == "bind")
    if bound[1].get("type") != "result":
        raise RuntimeError("resource binding failed for %s" % (user,))
    _send(sock, "<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>")
    _wait(sock, reader, lambda s: s[0] == "iq" and s[1].get("id") == "roster")
    if presence:
        _send(sock, "<presence/>")
    return sock, reader, "%s@%s/%s" % (user, DOMAIN, resource)


def responder_main(port: int, user: str, resource: str, answer: bool, counter, ready) -> None:
    """
    A process: the implementing client. Approves every subscription
    request; answers every IQ get or set with an empty result if C{answer},
    else never. C{counter} (a shared integer, or C{None}) counts the IQ
    requests received whose payload is C{<bench xmlns="urn:bench"/>}.
    Sends its full JID on C{ready} once online. Runs until the connection closes or the process
    is terminated.
    """
    sock, reader, jid = login(port, user, resource)
    ready.send(jid)
    received = 0
    recv = sock.recv
    feed = reader.feed
    while True:
        out = []
        for name, attrs, child, _ in reader.take():
            if name == "iq":
                kind = attrs.get("type")
                if kind != "get" and kind != "set":
                    continue
                if child == "bench" and counter is not None:
                    received += 1
                if answer:
                    sender = attrs.get("from")
                    if sender:
                        out.append(
                            "<iq type='result' id=%s to=%s/>"
                            % (quoteattr(attrs.get("id", "")), quoteattr(sender))
                        )
                    else:
                        out.append("<iq type='result' id=%s/>" % (quoteattr(attrs.get("id", "")),))
            elif name == "presence" and attrs.get("type") == "subscribe":
                sender = attrs.get("from", "").partition("/")[0]
                out.append("<presence type='subscribed' to=%s/>" % (quoteattr(sender),))
        if out:
            sock.sendall("".join(out).encode("utf-8"))
        if counter is not None:
            counter.value = received
        data = recv(262144)
        if not data:
            return
        feed(data)


def percentile(sorted_values: list, fraction: float):
    """
    Nearest-rank percentile of an already sorted list.
    """
    if not sorted_values:
        return float("nan")
    rank = max(1, int(-(-fraction * len(sorted_values) // 1)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def wait_until(predicate, timeout: float, what: str, step: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for " + what)
        time.sleep(step)


def build_info() -> str:
    """
    Which code is measured: the installed client_proxy (what twistd runs)
    against the working tree and its commit.
    """
    import hashlib
    import subprocess
    import sysconfig

    installed = Path(sysconfig.get_paths()["purelib"]) / "client_proxy"
    digest = hashlib.sha256()
    same = True
    for path in sorted(installed.glob("*.py")):
        data = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + data)
        tree = ROOT / "client_proxy" / path.name
        if not tree.exists() or tree.read_bytes() != data:
            same = False
    if sorted(p.name for p in (ROOT / "client_proxy").glob("*.py")) != sorted(
        p.name for p in installed.glob("*.py")
    ):
        same = False
    return "installed client_proxy %s (%s the working tree at %s)" % (
        digest.hexdigest()[:12],
        "same as" if same else "DIFFERS from",
        commit(),
    )


def commit() -> str:
    """
    The working tree's commit, abbreviated, or C{?}.
    """
    import subprocess

    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except Exception:
        head = ""
    return head or "?"


def machine_busy_seconds() -> float:
    """
    The CPU time all cores of the machine have spent busy so far (every
    state of /proc/stat's C{cpu} line but idle and iowait), in seconds: to
    tell how much of it went to processes other than the measured ones.
    """
    with open("/proc/stat") as f:
        fields = f.readline().split()
    # cpu user nice system idle iowait irq softirq steal guest guest_nice
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def wait_for_quiet(cores: float = 0.1, longest: float = 300.0) -> float:
    """
    Wait (up to C{longest} seconds) until the machine has been busy less
    than C{cores} cores over a whole second: other work running alongside
    distorts every figure. Returns the load of the last second.
    """
    deadline = time.monotonic() + longest
    told = False
    while True:
        before = machine_busy_seconds()
        time.sleep(1.0)
        load = machine_busy_seconds() - before
        if load < cores:
            return load
        if time.monotonic() > deadline:
            print("the machine is still busy (%.2f cores); measuring anyway" % (load,), file=sys.stderr)
            return load
        if not told:
            print("waiting for the machine to be quiet (%.2f cores busy)..." % (load,), file=sys.stderr)
            told = True
