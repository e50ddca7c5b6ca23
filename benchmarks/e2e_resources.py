"""
Throughput at window 200 through Prosody with many target resources
online, for every strategy, against the same run with 2 resources.

One private Prosody and its targets: C{small@example.org} with 2
resources and, for each size R asked for (1,000 by default),
C{fleetR@example.org} with R, each a fleet of workers in one process that
answer every IQ get with an empty result; the first worker of each fleet
approves the component before it asks (RFC 6121, 3.4), so that no storm
of presence comes. A requester (as in iq_throughput.py) pipelines IQ gets:

  direct    to the resources of each target in turn: how much the server
            itself slows down with R resources (and the fleet's own cost);
            then to the R resources chosen at random, as the random
            strategy spreads them;
  proxied   to proxy.example.org, the component started for each target
            and each strategy in turn.

For each strategy and R the figure is (proxied with R / proxied with 2) /
(direct with R / direct with 2): the component's own slowdown with R
resources, the server's allowed for; the issue's goal is at least 0.9.

  .venv/bin/python benchmarks/e2e_resources.py
  .venv/bin/python benchmarks/e2e_resources.py --resources 10,100,1000,3000 \\
      --json docs/performance/e2e_resources.json

Run as root with the virtualenv's Python (see scripts/setup).
"""

import argparse
import json
import multiprocessing
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _loadgen import (  # noqa: E402
    build_info,
    client_proxy,
    make_server,
    numbers,
    server_pid,
    stop_component,
    wait_for_quiet,
)
from first_contact import COMPONENT, fleet_main, settle  # noqa: E402
from iq_throughput import start_requester  # noqa: E402

from client_proxy.dispatch import STRATEGIES  # noqa: E402

SMALL = "small@example.org"


def fleetJID(size: int) -> str:
    """
    The target whose fleet has C{size} resources.
    """
    return "fleet%d@example.org" % (size,)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--resources",
        type=numbers,
        default=[1000],
        help="resources of each large target, e.g. 10,100,1000 (default 1000)",
    )
    parser.add_argument("--count", type=int, default=10000, help="IQs measured per phase")
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--strategies", default=",".join(sorted(STRATEGIES)))
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--no-wait", action="store_true")
    args = parser.parse_args(argv)
    if not args.no_wait:
        wait_for_quiet()
    strategies = args.strategies.split(",")
    targets = {SMALL: 2, **{fleetJID(size): size for size in args.resources}}
    ctx = multiprocessing.get_context("fork")
    phases: dict[str, dict] = {}
    with make_server("prosody") as server:
        fleets, stops, jids = [], [], {}
        for target, count in targets.items():
            conn, child = ctx.Pipe()
            fleet = ctx.Process(
                target=fleet_main,
                args=(server.c2s_port, count, child, target, True),
                daemon=True,
            )
            fleet.start()
            if not conn.poll(600):
                raise RuntimeError("the fleet of %s did not log in" % (target,))
            jids[target] = conn.recv()
            fleets.append(fleet)
            stops.append(conn)
        serverPid = server_pid(server)
        settle(serverPid)
        requester, conn = start_requester(ctx, server.c2s_port)

        def run(name: str, to, pids: dict) -> dict:
            conn.send((to, args.count, args.window, args.warmup, dict(pids, prosody=serverPid)))
            result = conn.recv()
            phases[name] = result
            print(
                "%-28s %7.0f IQ/s  p50 %.2f ms  errors %d"
                % (name, result["throughput_iq_s"], result["p50_ms"], sum(result["errors"].values())),
                flush=True,
            )
            return result

        try:
            for target, size in targets.items():
                run("direct %d" % size, jids[target], {})
                if size > 2:
                    # The same resources chosen at random, as the random
                    # strategy does: how a server's cost depends on the
                    # spread, too.
                    chosen = random.Random(1).choices(jids[target], k=args.count + args.warmup)
                    run("direct %d at random" % size, chosen, {})
            for strategy in strategies:
                for target, size in targets.items():
                    proxy = client_proxy(
                        server,
                        target,
                        "--strategy",
                        strategy,
                        "--max-in-flight-per-requester",
                        "100000",
                        "--max-in-flight",
                        "200000",
                    ).start()
                    try:
                        proxy.wait_for_log("Resource online", timeout=120, count=size)
                        settle(serverPid)
                        run("%s %d" % (strategy, size), COMPONENT, {"component": proxy.process.pid})
                    finally:
                        stop_component(proxy)
        finally:
            conn.send(None)
            requester.join(5)
            for stop in stops:
                stop.send(None)
            for fleet in fleets:
                fleet.join(10)
                if fleet.is_alive():
                    fleet.terminate()

    def throughput(phase: str) -> float:
        return phases[phase]["throughput_iq_s"]

    drops = {size: throughput("direct %d" % size) / throughput("direct 2") for size in args.resources}
    randomDrops = {
        size: throughput("direct %d at random" % size) / throughput("direct 2") for size in args.resources
    }
    for size in args.resources:
        print(
            "direct %d / direct 2: %.2f (the server's own drop); at random: %.2f"
            % (size, drops[size], randomDrops[size])
        )
    series = {}
    for strategy in strategies:
        two = throughput("%s 2" % strategy)
        series[strategy] = [{"x": 2, "throughput_iq_s": two}]
        for size in args.resources:
            many = throughput("%s %d" % (strategy, size))
            ratio = many / two / drops[size]
            print(
                "%-14s %d / 2: %.2f; allowing for the server's drop: %.2f"
                % (strategy, size, many / two, ratio)
            )
            series[strategy].append({"x": size, "throughput_iq_s": many, "ratio_to_two": ratio})
    series["direct"] = [
        {"x": size, "throughput_iq_s": throughput("direct %d" % size)} for size in targets.values()
    ]
    if args.json:
        results = {
            "benchmark": "e2e_resources",
            "command": "benchmarks/e2e_resources.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": {"cores": os.cpu_count(), "build": build_info(), "load_average": os.getloadavg()},
            "server_drop": drops,
            "server_drop_at_random": randomDrops,
            "phases": phases,
            "axes": {"resources": {"x": "online resources of the target", "series": series}},
        }
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
