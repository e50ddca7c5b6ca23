"""
The cost of dispatch against the number of resources: for each strategy,
the time of one choice, of a resource joining and of one leaving, with R
resources online.

A microbenchmark: no server and no network, the strategies of
C{client_proxy.dispatch} of the working tree over a C{Resources} of R
online resources, as the component keeps them. Measured per strategy and R:

  choose    one C{choose()}, for requesters taken in turn from 1,000
            distinct ones;
  join      a resource coming online (C{Resources.available}), with what
            every strategy does to follow it;
  leave     a resource going offline (C{Resources.unavailable});
  request   the bookkeeping of one request in the table of requests in
            flight (C{RequestTable.add} and C{remove}), which tells
            least-pending of each change.

C{--eligible} says which resources the strategy chooses among, for the
code of the working tree:

  online     every online resource (the strategy over C{Resources});
  undrained  those not draining (C{presence.Undrained}, as the proxy
             runs): a tenth of them show C{xa};
  features   as undrained, by the namespace of the payload
             (C{features.FeatureRouting}, C{--route-by-features}): half
             the resources announce one ver, half another, both known;
             a choice reads the namespace of a payload both offer, so it
             chooses among all the resources not draining. The visitors
             that join and leave announce the first ver.

Each figure is the best of several runs of many calls, in microseconds of
CPU time of this process per call (so that other processes sharing the
machine count less). With C{--baseline REF}, the same is measured in the same run for the
strategies and resources of commit REF (read with C{git show}, loaded from a
temporary folder, never written to the tree), which took a tuple of the
online resources for every choice: there the tuple is built once, outside
the timing, as the component built it once per change.

Usage (with the virtualenv's Python, see scripts/setup):

  .venv/bin/python benchmarks/dispatch.py
  .venv/bin/python benchmarks/dispatch.py --baseline 9c7942d --json dispatch.json
  .venv/bin/python benchmarks/dispatch.py --resources 2 100 --strategies sticky
  .venv/bin/python benchmarks/dispatch.py --resources 10000 --eligible online features
"""

import argparse
import gc
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from client_proxy import dispatch, presence  # noqa: E402
from client_proxy.caps import Caps, parseInfo, verification  # noqa: E402
from client_proxy.features import fleetDispatch  # noqa: E402
from client_proxy.inflight import ForwardedSet, RequestTable  # noqa: E402

TARGET = "service@example.org"
REQUESTERS = ["user%d@example.org/phone" % n for n in range(1000)]
#: Resources that come and go while the others stay.
VISITORS = ["%s/visitor-%d" % (TARGET, n) for n in range(100)]


def perCall(calls, budget: float, repeats: int = 7, before=None) -> float:
    """
    Microseconds of CPU per call of C{calls()}, which makes some calls and
    returns how many: the best of C{repeats} runs, each repeated until it
    has used C{budget} seconds. C{before()}, if given, runs before each
    C{calls()}, untimed.
    """
    best = float("inf")
    clock = time.process_time
    gc.disable()
    try:
        for _ in range(repeats):
            count, elapsed = 0, 0.0
            while elapsed < budget:
                if before is not None:
                    before()
                start = clock()
                count += calls()
                elapsed += clock() - start
            best = min(best, elapsed / count)
    finally:
        gc.enable()
    return best * 1e6


class Implementation:
    """
    The strategies and resources of one version of the code, and how that
    version is called.
    """

    def __init__(self, name: str, dispatchModule, presenceModule, takesTuple: bool) -> None:
        self.name = name
        self.strategies = dispatchModule.STRATEGIES
        self.resourcesClass = presenceModule.Resources
        self.takesTuple = takesTuple

    def chooser(self, strategy, resources):
        """
        A function of a requester that makes one choice.
        """
        if self.takesTuple:
            online = tuple(resources.online())
            return lambda requester: strategy.choose(online, requester)
        return strategy.choose


def baseline(ref: str, folder: Path) -> Implementation:
    """
    The implementation of commit C{ref}: its dispatch and presence modules,
    loaded from files in C{folder}.
    """
    modules = {}
    for name in ("presence", "dispatch"):
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", "%s:client_proxy/%s.py" % (ref, name)],
            check=True,
            capture_output=True,
        ).stdout
        path = folder / ("baseline_%s.py" % (name,))
        path.write_bytes(source)
        spec = importlib.util.spec_from_file_location("baseline_" + name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[name] = module
    takesTuple = "resources: tuple[str, ...], requester" in (folder / "baseline_dispatch.py").read_text()
    return Implementation("baseline " + ref, modules["dispatch"], modules["presence"], takesTuple)


ELIGIBLE = ("online", "undrained", "features")

#: The payload of the requests when routing by features: a namespace that
#: both vers offer.
PAYLOAD = b"<query xmlns='urn:example:common'>x</query>"


def workerVer(*features: str) -> tuple[Caps, bytes]:
    """
    The caps of a worker offering C{features}, and its disco#info answer.
    """
    answer = (
        "<query xmlns='http://jabber.org/protocol/disco#info'>"
        "<identity category='client' type='bot' name='worker'/>%s</query>"
        % "".join("<feature var='%s'/>" % (f,) for f in features)
    ).encode("utf-8")
    ver = verification(parseInfo(answer), "sha-1")
    return Caps("sha-1", "https://example.org/worker", ver), answer


VERS = [
    workerVer("urn:example:common", "urn:example:one", "http://jabber.org/protocol/caps"),
    workerVer("urn:example:common", "urn:example:two", "http://jabber.org/protocol/caps"),
]


class Workers:
    """
    Answers the disco#info requests of a L{CapsDiscovery} as the workers
    of L{VERS} would, without a network.
    """

    def __init__(self, discovery) -> None:
        self.sent = []
        discovery.querier = self

    def query(self, resource, payload, timeout, answered) -> bool:
        self.sent.append((payload, answered))
        return True

    def answerAll(self) -> None:
        while self.sent:
            payload, answered = self.sent.pop()
            answered(next(answer for caps, answer in VERS if caps.ver.encode() in payload))


def fleet(name: str, count: int, eligible: str, table: RequestTable):
    """
    C{count} resources, and a function of a requester that makes one
    choice among those C{eligible} with strategy C{name}.
    """
    resources = presence.Resources()
    if eligible == "online":
        for n in range(count):
            resources.available("%s/worker-%d" % (TARGET, n))
        return resources, dispatch.STRATEGIES[name](resources, table).choose
    chosen = fleetDispatch(resources, table, name, routeByFeatures=eligible == "features")
    strategy, features = chosen.strategy, chosen.features
    workers = None if features is None else Workers(features.discovery)
    for n in range(count):
        show = "xa" if n % 10 == 9 else None
        caps = VERS[n % 2][0] if features is not None else None
        resources.available("%s/worker-%d" % (TARGET, n), 0, show, caps)
    if features is None:
        return resources, strategy.choose
    workers.answerAll()
    strategyFor = features.strategyFor
    return resources, lambda requester: strategyFor(PAYLOAD).choose(requester)


def measure(
    implementation: Implementation, name: str, count: int, budget: float, eligible: str = "online"
) -> dict:
    table = RequestTable(30.0, 10**9, 10**9)
    if implementation.name == "current":
        resources, choose = fleet(name, count, eligible, table)
    else:
        resources = implementation.resourcesClass()
        for n in range(count):
            resources.available("%s/worker-%d" % (TARGET, n))
        strategy = implementation.strategies[name](resources, table)
        choose = implementation.chooser(strategy, resources)
    # What a visitor's presence says beyond its name (older code takes none).
    details = (0, None, VERS[0][0]) if eligible == "features" else ()

    def choices() -> int:
        for requester in REQUESTERS:
            choose(requester)
        return len(REQUESTERS)

    def joins() -> int:
        for visitor in VISITORS:
            resources.available(visitor, *details)
        return len(VISITORS)

    def leaves() -> int:
        for visitor in VISITORS:
            resources.unavailable(visitor)
        return len(VISITORS)

    def requests() -> int:
        add, remove = table.add, table.remove
        resource = "%s/worker-0" % (TARGET,)
        for requester in REQUESTERS:
            request = ForwardedSet(
                requester=requester, stanzaID="q", to="proxy.example.org", resource=resource
            )
            remove(add(request, now=0.0))
        return len(REQUESTERS)

    return {
        "implementation": implementation.name,
        "strategy": name,
        "resources": count,
        "eligible": eligible,
        "choose_us": perCall(choices, budget),
        "request_us": perCall(requests, budget),
        "join_us": perCall(joins, budget, before=leaves),
        "leave_us": perCall(leaves, budget, before=joins),
    }


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "commit": head,
        "dispatch_module": dispatch.__file__,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--resources", type=int, nargs="+", default=[2, 100, 1000, 10000],
        help="the numbers of online resources R (default: %(default)s)",
    )
    parser.add_argument(
        "--strategies", nargs="+", default=sorted(dispatch.STRATEGIES),
        choices=sorted(dispatch.STRATEGIES), help="the strategies (default: all)",
    )
    parser.add_argument(
        "--eligible", nargs="+", default=["online"], choices=ELIGIBLE,
        help="among which resources the strategies of the working tree choose "
        "(default: %(default)s; see above)",
    )
    parser.add_argument(
        "--baseline", metavar="REF",
        help="also measure the strategies of this commit, e.g. the one before a change",
    )
    parser.add_argument(
        "--budget", type=float, default=0.05,
        help="seconds each run of a measure lasts at least (default: %(default)s)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON to FILE")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dispatch-baseline-") as folder:
        implementations = [Implementation("current", dispatch, presence, takesTuple=False)]
        if args.baseline:
            implementations.append(baseline(args.baseline, Path(folder)))
        results = []
        print("%-14s %7s  %-24s %10s %10s %10s %10s" % (
            "strategy", "R", "code", "choose us", "join us", "leave us", "request us"))
        for name in args.strategies:
            for count in args.resources:
                runs = [(i, e) for i in implementations[:1] for e in args.eligible]
                runs += [(i, "online") for i in implementations[1:]]
                for implementation, eligible in runs:
                    figures = measure(implementation, name, count, args.budget, eligible)
                    results.append(figures)
                    label = implementation.name
                    if implementation.name == "current" and eligible != "online":
                        label += ", " + eligible
                    print("%-14s %7d  %-24s %10.2f %10.2f %10.2f %10.2f" % (
                        name, count, label, figures["choose_us"],
                        figures["join_us"], figures["leave_us"], figures["request_us"]),
                        flush=True)
    if args.json:
        report = {
            "benchmark": "dispatch",
            "command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
            "machine": machine(),
            "results": results,
        }
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
