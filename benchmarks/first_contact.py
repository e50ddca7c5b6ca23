"""
First contact with a fleet: how long after the component connects the
first request is proxied, against the time the server takes to deliver
its own storm of presence to a bare XEP-0114 consumer.

A target with N resources online (the workers, c2s clients of
C{service@example.org} in one process, each approving every subscription
request and answering every IQ get with an empty result), none of which
has approved the component yet. Each approves the component's request,
and the server answers each approval with the presence of every online
resource: N * N presence stanzas.

  bare   a plain XEP-0114 consumer (a socket and expat) connects as the
         component, asks for the subscription, and counts the target's
         presence until none has come for C{--quiet} seconds: the storm's
         time is the last one's arrival, counted from the request.
  proxy  on a fresh server and fleet, C{twistd -n client-proxy} starts;
         a requester sends IQ gets to the component, one at a time (an
         error, such as no resource known yet, is answered by sending the
         next), and the time from the start of twistd to the first result
         is the figure. The component's CPU time until then is shown too.

Each phase has a private Prosody of its own. The issue's goal is the
proxy's time within 1.3 times the bare storm's plus 2 s (which covers
twistd's start, counted in the proxy's time only).

  .venv/bin/python benchmarks/first_contact.py --workers 1000
  .venv/bin/python benchmarks/first_contact.py --workers 200 --json fc.json

Run as root with the virtualenv's Python, whose twistd has the
client-proxy plugin (see scripts/setup).
"""

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import selectors
import socket
import sys
import time
from pathlib import Path
from xml.sax.saxutils import quoteattr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _loadgen import (  # noqa: E402
    TARGET,
    StanzaReader,
    build_info,
    client_proxy,
    cpu_seconds,
    login,
    make_server,
    prosody_version,
    server_pid,
    stop_component,
    wait_for_quiet,
)

COMPONENT = "proxy.example.org"


def fleet_main(port: int, count: int, conn, target: str = TARGET, preApprove: bool = False) -> None:
    """
    A process: C{count} workers, resources of C{target}. Each approves
    every subscription request and answers every IQ get or set with an
    empty result; everything else (presence, roster pushes) is read and
    dropped. With C{preApprove}, the first one approves the component
    before it asks (RFC 6121, 3.4), so that no worker is asked. Sends the
    workers' full JIDs on C{conn} once all are online, and runs until told
    to stop.
    """
    selector = selectors.DefaultSelector()
    workers = {}
    jids = []
    for n in range(count):
        sock, reader, jid = login(port, target.partition("@")[0], "w%d" % n, presence=False)
        if preApprove and n == 0:
            sock.sendall(("<presence type='subscribed' to='%s'/>" % (COMPONENT,)).encode())
        sock.sendall(b"<presence/>")
        jids.append(jid)
        sock.setblocking(False)
        workers[sock.fileno()] = (sock, reader)
        selector.register(sock, selectors.EVENT_READ)
        if n % 50 == 49:
            _serve(selector, workers, 0)
    selector.register(conn.fileno(), selectors.EVENT_READ)
    conn.send(jids)
    while not conn.poll():
        _serve(selector, workers, 0.5)
    for sock, _ in workers.values():
        sock.close()


def _serve(selector, workers, timeout) -> None:
    for key, _ in selector.select(timeout):
        entry = workers.get(key.fd)
        if entry is None:
            continue
        sock, reader = entry
        try:
            data = sock.recv(262144)
        except BlockingIOError:
            continue
        if not data:
            selector.unregister(sock)
            del workers[key.fd]
            continue
        reader.feed(data)
        out = []
        for name, attrs, _, _ in reader.take():
            kind = attrs.get("type")
            if name == "presence" and kind == "subscribe":
                out.append(
                    "<presence type='subscribed' to=%s/>"
                    % quoteattr(attrs.get("from", "").partition("/")[0])
                )
            elif name == "iq" and kind in ("get", "set") and attrs.get("from"):
                out.append(
                    "<iq type='result' id=%s to=%s/>"
                    % (quoteattr(attrs.get("id", "")), quoteattr(attrs["from"]))
                )
        if out:
            sock.setblocking(True)
            sock.sendall("".join(out).encode())
            sock.setblocking(False)


def settle(pid: int, longest: float = 600.0) -> None:
    """
    Wait until the server has delivered the fleet's own presence (each
    worker's goes to every other one): until it used less than 5 % of a
    core over a second.
    """
    deadline = time.monotonic() + longest
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - before < 0.05:
            return


def with_fleet(workers: int, phase):
    """
    Run C{phase(server, fleetPid)} with a fresh Prosody and C{workers}
    resources of the target online.
    """
    ctx = multiprocessing.get_context("fork")
    with make_server("prosody") as server:
        conn, child = ctx.Pipe()
        fleet = ctx.Process(target=fleet_main, args=(server.c2s_port, workers, child), daemon=True)
        fleet.start()
        if not conn.poll(600):
            raise RuntimeError("the fleet did not log in")
        conn.recv()
        settle(server_pid(server))
        try:
            return phase(server, fleet.pid)
        finally:
            conn.send(None)
            fleet.join(10)
            if fleet.is_alive():
                fleet.terminate()


def bare_consumer(server, workers: int, quiet: float) -> dict:
    """
    Connect as the component with a socket, ask for the subscription, and
    count the target's available presence until it stops.
    """
    sock = socket.create_connection(("127.0.0.1", server.component_port))
    reader = StanzaReader()
    sock.sendall(
        (
            "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept'"
            " xmlns:stream='http://etherx.jabber.org/streams' to='%s'>" % (COMPONENT,)
        ).encode()
    )
    header = b""
    while b">" not in header.partition(b"<stream:stream")[2]:
        header += sock.recv(65536)
    streamID = re.search(rb"""\sid=['"]([^'"]+)""", header).group(1).decode()
    reader.feed(header)
    secret = server.components[COMPONENT]
    digest = hashlib.sha1((streamID + secret).encode()).hexdigest()
    sock.sendall(("<handshake>%s</handshake>" % (digest,)).encode())
    while not any(s[0] == "handshake" for s in reader.take()):
        reader.feed(sock.recv(65536))
    started = time.monotonic()
    sock.sendall(
        ("<presence type='subscribe' from='%s' to='%s'/>" % (COMPONENT, TARGET)).encode()
    )
    received = 0
    last = started
    sock.settimeout(600)  # until the first presence; then until it stops
    while True:
        try:
            data = sock.recv(262144)
        except socket.timeout:
            break
        if not data:
            break
        reader.feed(data)
        now = time.monotonic()
        for name, attrs, _, _ in reader.take():
            if name == "presence" and "type" not in attrs:
                received += 1
                last = now
                sock.settimeout(quiet)
    sock.close()
    return {"storm_s": last - started, "presence_received": received, "expected": workers * workers}


def proxy_first_request(server, timeout: float, options) -> dict:
    """
    Start the component, and send it IQ gets one at a time until one is
    answered with a result.
    """
    sock, reader, _ = login(server.c2s_port, "requester", "r", presence=False)
    started = time.monotonic()
    proxy = client_proxy(server, TARGET, *options).start()
    pid = proxy.process.pid
    print("component pid %d" % (pid,), file=sys.stderr, flush=True)
    cpuBefore = cpu_seconds(pid)
    errors = 0
    sent = 0
    first = None
    try:
        while first is None:
            if time.monotonic() - started > timeout:
                break
            sent += 1
            sock.sendall(
                (
                    "<iq type='get' id='q%d' to='%s'><bench xmlns='urn:bench'/></iq>"
                    % (sent, COMPONENT)
                ).encode()
            )
            answered = False
            while not answered and time.monotonic() - started <= timeout:
                sock.settimeout(1.0)
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    continue
                reader.feed(data)
                for name, attrs, _, _ in reader.take():
                    if name == "iq" and attrs.get("id") == "q%d" % (sent,):
                        answered = True
                        if attrs.get("type") == "result":
                            first = time.monotonic() - started
                        else:
                            errors += 1
                            time.sleep(0.05)
        cpu = cpu_seconds(pid) - cpuBefore
        log = proxy.log()
    finally:
        stop_component(proxy)
        sock.close()
    return {
        "first_request_s": first,
        "requests_sent": sent,
        "errors_before": errors,
        "component_cpu_s": cpu,
        "probes": log.count("probing its resources"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--phases", default="bare,proxy")
    parser.add_argument("--quiet", type=float, default=3.0, help="seconds without presence that end the bare storm")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up on the first request after this")
    parser.add_argument("--proxy-option", action="append", default=[], metavar="OPTION")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON to FILE")
    parser.add_argument("--no-wait", action="store_true")
    args = parser.parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if not args.no_wait:
        wait_for_quiet()
    results = {
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "prosody": prosody_version(),
        "build": build_info(),
        "phases": {},
    }
    for phase in phases:
        if phase == "bare":
            results["phases"]["bare"] = with_fleet(
                args.workers, lambda server, pid: bare_consumer(server, args.workers, args.quiet)
            )
        elif phase == "proxy":
            results["phases"]["proxy"] = with_fleet(
                args.workers,
                lambda server, pid: proxy_first_request(server, args.timeout, args.proxy_option),
            )
        else:
            parser.error("phases are bare and proxy")
        print(phase, json.dumps(results["phases"][phase]), file=sys.stderr, flush=True)
    measured = results["phases"]
    if "bare" in measured and "proxy" in measured and measured["proxy"]["first_request_s"]:
        bare = measured["bare"]["storm_s"]
        results["limit_s"] = 1.3 * bare + 2
        results["within_limit"] = measured["proxy"]["first_request_s"] <= results["limit_s"]
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
