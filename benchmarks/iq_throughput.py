"""
IQ throughput and latency through the proxy, as ratios against the direct
path, measured in one run.

Starts a private Prosody (or, with --server ejabberd, a private ejabberd)
on loopback, an implementing client
(C{service@example.org/bench}, a responder answering every IQ get with an
empty result and approving the component's subscription), the component as
C{twistd -n client-proxy} (the installed package), and a requester that
pipelines IQ gets with a window. Two phases, each after a warm-up:

  direct   the requester sends to the responder's full JID;
  proxied  the requester sends to proxy.example.org;
  floor    (only with --phases ...,floor) the same, with the component
           replaced by floor.py: the least a component on Twisted can do
           to proxy an IQ, none of client-proxy's promises kept; the
           ceiling for any component on this machine.

For each it prints throughput (IQ/s), p50/p99 round-trip latency (ms), and
the CPU time per IQ (microseconds, from utime+stime in /proc/PID/stat) of
the component, of the server (Prosody's Lua process, or ejabberd's
beam.smp with all its scheduler threads), of the two load generator
processes and of every other process of the machine ("other", from
/proc/stat), plus how
busy each was (% of one core), then the ratio proxied/direct throughput and
the latency the proxy adds at p50 and p99 (proxied - direct).

The machine's cores are shared by the server, the component and the load
generator: read the busy columns to see which one is the bottleneck (a
process near 100% is). The requester and the responder are plain sockets
with expat, each in a process of its own. Other work on the machine skews
everything: the script first waits (up to 5 minutes) for the machine to be
quiet, and warns when "other" was busy during a phase.

Usage (as root: Prosody runs as the prosody user, ejabberd as the ejabberd
user; run with the virtualenv's Python, whose twistd has the client-proxy
plugin; see scripts/setup):

  .venv/bin/python benchmarks/iq_throughput.py                # window 200
  .venv/bin/python benchmarks/iq_throughput.py --window 1     # latency
  .venv/bin/python benchmarks/iq_throughput.py --count 20000 --json
  .venv/bin/python benchmarks/iq_throughput.py --server ejabberd
  .venv/bin/python benchmarks/iq_throughput.py --phases direct,proxied,floor

To profile the component during the proxied phase (py-spy in a venv of its
own, e.g. /tmp/pyspy-venv/bin/pip install py-spy):

  .venv/bin/python benchmarks/iq_throughput.py --verbose --count 100000 \
      --phases proxied &      # prints the pids on stderr
  py-spy record -p COMPONENT_PID -d 15 -f raw -o profile.txt
"""

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _loadgen import (  # noqa: E402
    SERVERS,
    TARGET,
    cpu_seconds,
    login,
    machine_busy_seconds,
    make_server,
    percentile,
    server_available,
    server_pid,
    build_info,
    server_version,
    responder_main,
    wait_for_quiet,
    start_component,
    stop_component,
)

PAYLOAD = "<bench xmlns='urn:bench'/>"


def pipeline(sock, reader, to: str | list[str], count: int, window: int, tag: str) -> dict:
    """
    Send C{count} IQ gets to C{to} (to each address of a list in turn),
    keeping C{window} unanswered; return the latencies (ns, indexed by
    request), the errors and the elapsed time.
    """
    prefix = tag + "-"
    plen = len(prefix)
    templates = [
        "<iq type='get' id='" + prefix + "%d' to='" + address + "'>" + PAYLOAD + "</iq>"
        for address in ([to] if isinstance(to, str) else to)
    ]
    turns = len(templates)
    sentAt = [0] * count
    latency = [0] * count
    errors: dict[str, int] = {}
    clock = time.perf_counter_ns
    recv = sock.recv
    feed = reader.feed
    take = reader.take

    sent = min(window, count)
    start = clock()
    for i in range(sent):
        sentAt[i] = start
    sock.sendall("".join([templates[i % turns] % i for i in range(sent)]).encode())
    done = 0
    while done < count:
        data = recv(262144)
        if not data:
            raise RuntimeError("the server closed the requester's connection")
        feed(data)
        now = clock()
        for name, attrs, _, condition in take():
            if name != "iq":
                continue
            ident = attrs.get("id", "")
            kind = attrs.get("type")
            if not ident.startswith(prefix) or (kind != "result" and kind != "error"):
                continue
            i = int(ident[plen:])
            latency[i] = now - sentAt[i]
            done += 1
            if kind == "error":
                errors[condition] = errors.get(condition, 0) + 1
        more = min(done + window, count) - sent
        if more > 0:
            now = clock()
            for i in range(sent, sent + more):
                sentAt[i] = now
            sock.sendall("".join([templates[i % turns] % i for i in range(sent, sent + more)]).encode())
            sent += more
    return {"latency": latency, "errors": errors, "elapsed": (clock() - start) / 1e9}


def requester_main(port: int, conn) -> None:
    """
    A process: the requester. Logs in, then runs the phases it is sent on
    C{conn} and sends back their figures, until it receives C{None}.
    """
    sock, reader, _ = login(port, "requester", "bench", presence=False)
    conn.send("ready")
    phase = 0
    while True:
        command = conn.recv()
        if command is None:
            sock.close()
            return
        to, count, window, warmup, pids = command
        phase += 1
        if warmup:
            pipeline(sock, reader, to, warmup, window, "w%d" % (phase,))
        pids = dict(pids, requester=os.getpid())
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        before["machine"] = machine_busy_seconds()
        result = pipeline(sock, reader, to, count, window, "m%d" % (phase,))
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        after["machine"] = machine_busy_seconds()
        used = {name: after[name] - before[name] for name in pids}
        # Everything else the machine did meanwhile: other processes.
        used["other"] = max(0.0, after["machine"] - before["machine"] - sum(used.values()))
        latency = sorted(result["latency"])
        elapsed = result["elapsed"]
        conn.send(
            {
                "count": count,
                "window": window,
                "elapsed_s": elapsed,
                "throughput_iq_s": count / elapsed,
                "p50_ms": percentile(latency, 0.50) / 1e6,
                "p99_ms": percentile(latency, 0.99) / 1e6,
                "max_ms": latency[-1] / 1e6,
                "errors": result["errors"],
                "cpu_us_per_iq": {name: used[name] * 1e6 / count for name in used},
                "busy_percent": {name: used[name] * 100 / elapsed for name in used},
            }
        )


def start_requester(ctx, port: int):
    """
    Start L{requester_main} in a process of its own; return the process
    and the end of the pipe that runs its phases, once it is logged in.
    """
    conn, child = ctx.Pipe()
    requester = ctx.Process(target=requester_main, args=(port, child), daemon=True)
    requester.start()
    if not conn.poll(30):
        raise RuntimeError("the requester did not log in")
    conn.recv()
    return requester, conn


def columns(server: str) -> tuple:
    return ("component", server, "requester", "responder", "other")


def table(results: dict, args) -> str:
    COLUMNS = columns(results["server"])
    lines = []
    head = "%-8s %9s %8s %8s %8s" % ("path", "IQ/s", "p50 ms", "p99 ms", "errors")
    head += "  | CPU us/IQ: " + " ".join("%9s" % c for c in COLUMNS)
    head += "  | busy %: " + " ".join("%5s" % c[:5] for c in COLUMNS)
    lines.append(head)
    lines.append("-" * len(head))
    for path, r in results["phases"].items():
        line = "%-8s %9.0f %8.2f %8.2f %8d" % (
            path,
            r["throughput_iq_s"],
            r["p50_ms"],
            r["p99_ms"],
            sum(r["errors"].values()),
        )
        line += "  |            " + " ".join(
            "%9s" % ("%.0f" % r["cpu_us_per_iq"][c] if c in r["cpu_us_per_iq"] else "-")
            for c in COLUMNS
        )
        line += "  |         " + " ".join(
            "%5s" % ("%.0f" % r["busy_percent"][c] if c in r["busy_percent"] else "-")
            for c in COLUMNS
        )
        lines.append(line)
    lines.append("")
    busy = max(r["busy_percent"]["other"] for r in results["phases"].values())
    if busy > 10:
        lines.append(
            "WARNING: other processes used up to %.0f%% of a core during a phase: "
            "the machine was not quiet" % (busy,)
        )
    if "ratio_throughput" in results:
        lines.append(
            "throughput proxied/direct:          %.2f" % (results["ratio_throughput"],)
        )
        lines.append(
            "latency added by the proxy at p50:  %.2f ms" % (results["added_p50_ms"],)
        )
        lines.append(
            "latency added by the proxy at p99:  %.2f ms" % (results["added_p99_ms"],)
        )
    if "floor_ratio_throughput" in results:
        lines.append(
            "throughput floor/direct:            %.2f (floor.py: the least a component does)"
            % (results["floor_ratio_throughput"],)
        )
    return "\n".join(lines)


def start_floor(server, resource: str) -> subprocess.Popen:
    """
    Start C{floor.py}, the least a component can do, for the server's
    component, sending every request to C{resource}; return once it is
    authenticated.
    """
    component, secret = next(iter(server.components.items()))
    floor = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve().parent / "floor.py"),
         str(server.component_port), component, secret, resource],
        stdout=subprocess.PIPE,
        text=True,
    )
    if floor.stdout is None or floor.stdout.readline().strip() != "ready":
        floor.kill()
        raise RuntimeError("floor.py did not authenticate")
    return floor


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=10000, help="IQs measured per phase (default 10000)")
    parser.add_argument("--window", type=int, default=200, help="IQs in flight at once (default 200; 1 for latency)")
    parser.add_argument("--warmup", type=int, default=500, help="IQs sent before each measured phase (default 500)")
    parser.add_argument(
        "--phases",
        default="direct,proxied",
        help="comma-separated phases to run, in order (default direct,proxied)",
    )
    parser.add_argument(
        "--proxy-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="an extra option for twistd client-proxy, e.g. --proxy-option=--strategy=first",
    )
    parser.add_argument(
        "--server",
        choices=sorted(SERVERS),
        default="prosody",
        help="the XMPP server to run privately (default prosody)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="start at once, without first waiting (up to 5 minutes) for the machine to be quiet",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="say on stderr what is running, with the pids (to attach a profiler)",
    )
    args = parser.parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if not set(phases) <= {"direct", "proxied", "floor"}:
        parser.error("phases are direct, proxied and floor")
    if not server_available(args.server):
        parser.error("%s is not installed (see scripts/setup)" % (args.server,))

    results = {
        "count": args.count,
        "window": args.window,
        "warmup": args.warmup,
        "cpus": os.cpu_count(),
        "server": args.server,
        args.server: server_version(args.server),
        "build": build_info(),
        "phases": {},
    }
    if not args.no_wait:
        wait_for_quiet()
    ctx = multiprocessing.get_context("fork")
    with make_server(args.server) as server:
        ready, ready_child = ctx.Pipe()
        responder = ctx.Process(
            target=responder_main,
            args=(server.c2s_port, TARGET.partition("@")[0], "bench", True, None, ready_child),
            daemon=True,
        )
        responder.start()
        if not ready.poll(30):
            raise RuntimeError("the responder did not log in")
        responder_jid = ready.recv()
        proxy = None
        floor = None
        requester = None
        try:
            options = [
                "--max-in-flight-per-requester", str(max(100000, 2 * args.window)),
                "--max-in-flight", str(max(200000, 2 * args.window)),
            ] + args.proxy_option
            proxy = start_component(server, *options)
            pids = {
                args.server: server_pid(server),
                "component": proxy.process.pid,
                "responder": responder.pid,
            }
            if args.verbose:
                print("pids: %s" % (pids,), file=sys.stderr, flush=True)
            requester, conn = start_requester(ctx, server.c2s_port)
            for phase in phases:
                to = responder_jid if phase == "direct" else next(iter(server.components))
                if phase == "floor":
                    # The server spreads a host's stanzas over its
                    # connections (ejabberd): the component goes first.
                    stop_component(proxy)
                    proxy = None
                    floor = start_floor(server, responder_jid)
                    pids["component"] = floor.pid
                if args.verbose:
                    print("phase %s: %d IQs to %s" % (phase, args.count, to), file=sys.stderr, flush=True)
                conn.send((to, args.count, args.window, args.warmup, pids))
                results["phases"][phase] = conn.recv()
            conn.send(None)
            requester.join(5)
        finally:
            if requester is not None and requester.is_alive():
                requester.terminate()
            if proxy is not None:
                stop_component(proxy)
            if floor is not None:
                floor.terminate()
                floor.wait(10)
            responder.terminate()
            responder.join(5)

    measured = results["phases"]
    if "direct" in measured and "proxied" in measured:
        d, p = measured["direct"], measured["proxied"]
        results["ratio_throughput"] = p["throughput_iq_s"] / d["throughput_iq_s"]
        results["added_p50_ms"] = p["p50_ms"] - d["p50_ms"]
        results["added_p99_ms"] = p["p99_ms"] - d["p99_ms"]
    if "direct" in measured and "floor" in measured:
        results["floor_ratio_throughput"] = (
            measured["floor"]["throughput_iq_s"] / measured["direct"]["throughput_iq_s"]
        )
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    else:
        print(
            "IQ gets: %d measured per phase after %d warm-up, window %d; %s %s; %d CPUs"
            % (
                args.count,
                args.warmup,
                args.window,
                {"prosody": "Prosody"}.get(args.server, args.server),
                results[args.server],
                results["cpus"],
            )
        )
        print(results["build"])
        print("CPU us/IQ = CPU time of the process / IQs; busy % = CPU time / elapsed (100 = one core);")
        print("other = every other process of the machine (from /proc/stat)")
        print()
        print(table(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
