"""
The cost of requests in flight: the component's memory per request held,
and the CPU it spends expiring them.

Starts a private Prosody on loopback, an implementing client
(C{service@example.org/bench}) that approves the component's subscription
but never answers an IQ, the component as C{twistd -n client-proxy} with the
limits raised (C{--max-in-flight}, C{--max-in-flight-per-requester} and
C{--max-in-flight-per-domain}
200000), and requesters (several connections in one process) that send IQ
gets to proxy.example.org, paced so that at most C{--lag} requests are on
their way between the requesters and the responder at any time.

Phase 1, memory: the component has a timeout long enough that nothing
expires (C{--timeout 3600}). The component's resident memory (VmRSS in
/proc/PID/status) is read before the first request and again once the
responder has received every request (the component then holds them all);
the difference divided by the count is the memory per request in flight.
The CPU the component and Prosody spent forwarding them is shown too.

Phase 2, expiry: the component is killed (SIGKILL: a graceful stop would
answer all of them) and started again with a short timeout; the same number
of requests is sent again. By default the timeout is chosen so that every
request is in flight before the first one expires (phase 1's fill time x
1.25 + 5 s), so that the CPU the component spends from then until the
requesters have received every C{remote-server-timeout} error is the cost
of expiring them alone; C{--expire-timeout 5} forces a fixed timeout (then,
if filling takes longer, expiry overlaps the filling: read the second
figure, phase 2's whole component CPU minus what phase 1 spent forwarding). Printed: the component's CPU per expired request,
the time from the last request received by the responder to the last error
received by a requester, and how late the errors came (arrival - sending -
timeout).

Usage (as root: Prosody runs as the prosody user; run with the virtualenv's
Python, whose twistd has the client-proxy plugin; see scripts/setup):

  .venv/bin/python benchmarks/inflight_memory.py
  .venv/bin/python benchmarks/inflight_memory.py --count 20000 --expire-timeout 5
  .venv/bin/python benchmarks/inflight_memory.py --json
"""

import argparse
import json
import math
import multiprocessing
import os
import select
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _loadgen import (  # noqa: E402
    TARGET,
    Prosody,
    cpu_seconds,
    login,
    machine_busy_seconds,
    percentile,
    prosody_available,
    prosody_pid,
    build_info,
    prosody_version,
    responder_main,
    wait_for_quiet,
    rss_bytes,
    start_component,
    stop_component,
    wait_until,
)

PAYLOAD = "<bench xmlns='urn:bench'/>"


def requester_main(port: int, connections: int, counter, conn) -> None:
    """
    A process: C{connections} requester connections. Runs the phases it is
    sent on C{conn} and sends back their figures, until it receives C{None}.

    A phase: C{(to, count, tag, base, lag, timeout, waitErrors)}. Sends
    C{count} IQ gets round robin over the connections, in batches, never
    more than C{lag} ahead of the responder's C{counter} (minus C{base});
    reads whatever comes back meanwhile; if C{waitErrors}, goes on until
    every request has been answered.
    """
    clients = [login(port, "requester%d" % (n,), "bench", presence=False) for n in range(connections)]
    socks = [c[0] for c in clients]
    readers = {c[0].fileno(): c[1] for c in clients}
    conn.send("ready")
    clock = time.monotonic
    while True:
        command = conn.recv()
        if command is None:
            for sock in socks:
                sock.close()
            return
        to, count, tag, base, lag, timeout, waitErrors = command
        prefix = tag + "-"
        plen = len(prefix)
        template = "<iq type='get' id='" + prefix + "%d' to='" + to + "'>" + PAYLOAD + "</iq>"
        sentAt = [0.0] * count
        answeredAt = [0.0] * count
        conditions: dict[str, int] = {}
        answered = 0
        lastAnswer = 0.0

        def drain(wait: float) -> None:
            nonlocal answered, lastAnswer
            ready, _, _ = select.select(socks, [], [], wait)
            for sock in ready:
                data = sock.recv(262144)
                if not data:
                    raise RuntimeError("the server closed a requester's connection")
                reader = readers[sock.fileno()]
                reader.feed(data)
                now = clock()
                for name, attrs, _, condition in reader.take():
                    ident = attrs.get("id", "")
                    if name != "iq" or not ident.startswith(prefix):
                        continue
                    i = int(ident[plen:])
                    answeredAt[i] = now
                    answered += 1
                    lastAnswer = now
                    key = condition if attrs.get("type") == "error" else "result"
                    conditions[key] = conditions.get(key, 0) + 1

        batch = 200
        sent = 0
        start = clock()
        turn = 0
        while sent < count:
            if sent - (counter.value - base) >= lag:
                drain(0.002)
                continue
            n = min(batch, count - sent)
            now = clock()
            for i in range(sent, sent + n):
                sentAt[i] = now
            socks[turn % len(socks)].sendall(
                "".join([template % i for i in range(sent, sent + n)]).encode()
            )
            turn += 1
            sent += n
            drain(0)
        sendingDone = clock()
        if waitErrors:
            while answered < count:
                drain(1.0)
        else:
            drain(0.1)
        late = sorted(
            answeredAt[i] - sentAt[i] - timeout for i in range(count) if answeredAt[i]
        )
        conn.send(
            {
                "sending_s": sendingDone - start,
                "answered": answered,
                "answers": conditions,
                "last_answer_monotonic": lastAnswer,
                "late_p50_s": percentile(late, 0.5) if late else None,
                "late_p99_s": percentile(late, 0.99) if late else None,
                "late_max_s": late[-1] if late else None,
            }
        )


def settle(pid: int, quiet: float = 0.3, timeout: float = 30.0) -> None:
    """
    Wait until C{pid} has used no CPU for C{quiet} seconds.
    """
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = cpu_seconds(pid)
        if now == last:
            return
        last = now


def mib(n: float) -> str:
    return "%.1f MiB" % (n / 1048576,)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100000, help="requests in flight (default 100000)")
    parser.add_argument("--requesters", type=int, default=4, help="requester connections (default 4)")
    parser.add_argument(
        "--lag",
        type=int,
        default=2000,
        help="most requests sent but not yet received by the responder (default 2000)",
    )
    parser.add_argument(
        "--expire-timeout",
        type=float,
        default=None,
        help="the component's --timeout in phase 2 (default: phase 1's fill time x 1.25 + 5 s)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="start at once, without first waiting (up to 5 minutes) for the machine to be quiet",
    )
    args = parser.parse_args(argv)
    if not prosody_available():
        parser.error("prosody is not installed (see scripts/setup)")

    limits = [
        "--max-in-flight", str(max(200000, 2 * args.count)),
        "--max-in-flight-per-requester", str(max(200000, 2 * args.count)),
        "--max-in-flight-per-domain", str(max(200000, 2 * args.count)),
    ]
    results = {
        "count": args.count,
        "requesters": args.requesters,
        "cpus": os.cpu_count(),
        "prosody": prosody_version(),
        "build": build_info(),
    }
    if not args.no_wait:
        wait_for_quiet()
    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("q", 0, lock=False)
    with Prosody() as prosody:
        component_jid = next(iter(prosody.components))
        ready, ready_child = ctx.Pipe()
        responder = ctx.Process(
            target=responder_main,
            args=(prosody.c2s_port, TARGET.partition("@")[0], "bench", False, counter, ready_child),
            daemon=True,
        )
        responder.start()
        if not ready.poll(30):
            raise RuntimeError("the responder did not log in")
        ready.recv()
        proxy = None
        requester = None
        try:
            prosodyPid = prosody_pid(prosody)
            conn, conn_child = ctx.Pipe()
            requester = ctx.Process(
                target=requester_main,
                args=(prosody.c2s_port, args.requesters, counter, conn_child),
                daemon=True,
            )
            requester.start()
            if not conn.poll(60):
                raise RuntimeError("the requesters did not log in")
            conn.recv()

            # Phase 1: memory.
            proxy = start_component(prosody, "--timeout", "3600", *limits)
            pid = proxy.process.pid
            settle(pid)
            rssBefore = rss_bytes(pid)
            prosodyRssBefore = rss_bytes(prosodyPid)
            cpuBefore = cpu_seconds(pid), cpu_seconds(prosodyPid), machine_busy_seconds()
            base = counter.value
            start = time.monotonic()
            conn.send((component_jid, args.count, "m", base, args.lag, 3600.0, False))
            wait_until(lambda: counter.value - base >= args.count, 600, "the responder to receive every request")
            fill = time.monotonic() - start
            cpuAfter = cpu_seconds(pid), cpu_seconds(prosodyPid), machine_busy_seconds()
            phase1 = conn.recv()
            settle(pid)
            rssAfter = rss_bytes(pid)
            results["memory"] = {
                "timeout_s": 3600.0,
                "fill_s": fill,
                "rss_before_bytes": rssBefore,
                "rss_after_bytes": rssAfter,
                "bytes_per_request": (rssAfter - rssBefore) / args.count,
                "prosody_rss_delta_bytes": rss_bytes(prosodyPid) - prosodyRssBefore,
                "component_cpu_us_per_request": (cpuAfter[0] - cpuBefore[0]) * 1e6 / args.count,
                "prosody_cpu_us_per_request": (cpuAfter[1] - cpuBefore[1]) * 1e6 / args.count,
                "answers_during_fill": phase1["answers"],
                # The requesters, the responder and other processes.
                "rest_of_machine_busy_percent": (
                    (cpuAfter[2] - cpuBefore[2]) - (cpuAfter[0] - cpuBefore[0]) - (cpuAfter[1] - cpuBefore[1])
                ) * 100 / fill,
            }
            stop_component(proxy, signal.SIGKILL)
            proxy = None

            # Phase 2: expiry.
            timeout = args.expire_timeout
            if timeout is None:
                timeout = float(math.ceil(fill * 1.25 + 5))
            proxy = start_component(prosody, "--timeout", "%g" % (timeout,), *limits)
            pid = proxy.process.pid
            settle(pid)
            base = counter.value
            cpu0 = cpu_seconds(pid), cpu_seconds(prosodyPid)
            start = time.monotonic()
            conn.send((component_jid, args.count, "e", base, args.lag, timeout, True))
            wait_until(lambda: counter.value - base >= args.count, 600, "the responder to receive every request")
            allInFlight = time.monotonic()
            cpu1 = cpu_seconds(pid), cpu_seconds(prosodyPid), machine_busy_seconds()
            rssFull = rss_bytes(pid)
            if not conn.poll(timeout + 600):
                raise RuntimeError("the requesters did not get every answer")
            phase2 = conn.recv()
            cpu2time = time.monotonic()
            cpu2 = cpu_seconds(pid), cpu_seconds(prosodyPid), machine_busy_seconds()
            settle(pid)
            results["expiry"] = {
                "timeout_s": timeout,
                "fill_s": allInFlight - start,
                "expired_before_all_in_flight": start + timeout < allInFlight,
                "component_cpu_us_per_request_fill": (cpu1[0] - cpu0[0]) * 1e6 / args.count,
                "component_cpu_us_per_request_expiry": (cpu2[0] - cpu1[0]) * 1e6 / args.count,
                # The same, robust to expiry overlapping the fill: all of
                # phase 2 minus what phase 1 spent forwarding.
                "component_cpu_us_per_request_expiry_by_difference": (
                    (cpu2[0] - cpu0[0]) * 1e6 / args.count
                    - results["memory"]["component_cpu_us_per_request"]
                ),
                "prosody_cpu_us_per_request_expiry": (cpu2[1] - cpu1[1]) * 1e6 / args.count,
                "all_in_flight_to_last_error_s": phase2["last_answer_monotonic"] - allInFlight,
                "answers": phase2["answers"],
                "late_p50_s": phase2["late_p50_s"],
                "late_p99_s": phase2["late_p99_s"],
                "late_max_s": phase2["late_max_s"],
                "rss_all_in_flight_bytes": rssFull,
                "rss_after_expiry_bytes": rss_bytes(pid),
                "expiry_s": cpu2time - allInFlight,
                "rest_of_machine_busy_percent": (
                    (cpu2[2] - cpu1[2]) - (cpu2[0] - cpu1[0]) - (cpu2[1] - cpu1[1])
                ) * 100 / (cpu2time - allInFlight),
            }
            conn.send(None)
            requester.join(10)
        finally:
            if requester is not None and requester.is_alive():
                requester.terminate()
            if proxy is not None:
                stop_component(proxy, signal.SIGKILL)
            responder.terminate()
            responder.join(5)

    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
        return 0
    m, e = results["memory"], results["expiry"]
    print(
        "Requests in flight: %d IQ gets over %d requester connections; Prosody %s; %d CPUs"
        % (args.count, args.requesters, results["prosody"], results["cpus"])
    )
    print(results["build"])
    print()
    rows = [
        ("Phase 1: memory (--timeout 3600)", ""),
        ("  time to put all in flight", "%.1f s" % m["fill_s"]),
        ("  component VmRSS before", mib(m["rss_before_bytes"])),
        ("  component VmRSS, all in flight", mib(m["rss_after_bytes"])),
        ("  component memory per request in flight", "%.0f bytes" % m["bytes_per_request"]),
        ("  Prosody VmRSS change", mib(m["prosody_rss_delta_bytes"])),
        ("  component CPU per request forwarded", "%.0f us" % m["component_cpu_us_per_request"]),
        ("  Prosody CPU per request forwarded", "%.0f us" % m["prosody_cpu_us_per_request"]),
        ("  answers during the fill (should be none)", str(sum(m["answers_during_fill"].values()))),
        ("  rest of the machine busy (generator, others)", "%.0f%% of a core" % m["rest_of_machine_busy_percent"]),
        ("Phase 2: expiry (--timeout %g)" % e["timeout_s"], ""),
        ("  time to put all in flight", "%.1f s" % e["fill_s"]),
        ("  some expired before all were in flight", "yes" if e["expired_before_all_in_flight"] else "no"),
        ("  component CPU per request expired", "%.0f us" % e["component_cpu_us_per_request_expiry"]),
        (
            "    (phase 2 in all - phase 1's forwarding)",
            "%.0f us" % e["component_cpu_us_per_request_expiry_by_difference"],
        ),
        ("  Prosody CPU per error routed", "%.0f us" % e["prosody_cpu_us_per_request_expiry"]),
        ("  all in flight -> last error received", "%.1f s" % e["all_in_flight_to_last_error_s"]),
        ("  answers received", ", ".join("%s %d" % kv for kv in sorted(e["answers"].items()))),
        (
            "  error received - request sent - timeout",
            "p50 %.3f s, p99 %.3f s, max %.3f s" % (e["late_p50_s"], e["late_p99_s"], e["late_max_s"]),
        ),
        ("  rest of the machine busy (generator, others)", "%.0f%% of a core" % e["rest_of_machine_busy_percent"]),
        ("  component VmRSS, all in flight", mib(e["rss_all_in_flight_bytes"])),
        ("  component VmRSS after expiry", mib(e["rss_after_expiry_bytes"])),
    ]
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print("%-*s  %s" % (width, label, value))
    return 0


if __name__ == "__main__":
    sys.exit(main())
