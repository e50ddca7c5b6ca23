"""
How the component's own cost per IQ grows: CPU per proxied IQ against the
number of the target's resources, of distinct requesters, of requests in
flight, and of proxies in one process.

In process, with no server and no network: IQ requests go in as bytes
through the component's own stream (L{FastXmlStream}: the splitter, the
router, the table of requests in flight, the strategy, the writes), the
resource's answer comes back the same way, and what the component writes
goes to a socket double that takes everything (the syscalls and the
reactor's turns, which do not depend on these numbers, are left out:
``iq_throughput.py`` measures them end to end). The figure is the CPU time
of the component's calls per IQ (request and answer), the median of
C{--repeat} runs of C{--count} IQs.

  resources    R online resources (2 to 10,000), for every strategy
  requesters   IQs from Q distinct requesters in turn (1 to 100,000)
  inflight     K requests held in flight, never answered (0 to 100,000),
               while others are answered
  proxies      P proxies in one process (1 to 100), IQs to each in turn;
               the memory each proxy allocates is shown too (tracemalloc)
  presence     the CPU per presence stanza of the target (not per IQ) as a
               fleet's storm brings it, with R resources (2 to 10,000)

  .venv/bin/python benchmarks/scaling.py
  .venv/bin/python benchmarks/scaling.py --axes requesters,inflight \\
      --json docs/performance/scaling.json
  .venv/bin/python benchmarks/plot.py docs/performance/scaling.json

Each axis is one series (one per strategy for C{resources}) of
C{{x, cpu_us_per_iq}} points in the JSON.
"""

import argparse
import gc
import json
import os
import platform
import re
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from twisted.internet.abstract import FileDescriptor  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402
from twisted.internet.testing import MemoryReactor  # noqa: E402
from twisted.words.protocols.jabber import xmlstream  # noqa: E402
from twisted.words.protocols.jabber.jid import JID  # noqa: E402

from _loadgen import commit, numbers  # noqa: E402
from client_proxy.dispatch import STRATEGIES  # noqa: E402
from client_proxy.fastpath import FastXmlStream  # noqa: E402
from client_proxy.inflight import RequestTable  # noqa: E402
from client_proxy.presence import Resources, TargetPresenceHandler  # noqa: E402
from client_proxy.router import IQRouter  # noqa: E402
from client_proxy.routing import Routing  # noqa: E402

TARGET = "service@example.org"
HEADER = (
    b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'"
    b" xmlns='jabber:component:accept' from='%s' id='x'>"
)
PAYLOAD = b"<query xmlns='urn:bench'/>"
_FORWARDED = re.compile(rb"<iq to='([^']*)'[^>]*? from='([^']*)'")


class Socket(FileDescriptor):
    """
    A connected socket's transport that takes everything written to it,
    and keeps the last write.
    """

    def __init__(self, reactor) -> None:
        super().__init__(reactor)
        self.connected = True
        self.last = b""

    def writeSomeData(self, data) -> int:
        self.last = bytes(data)
        return len(data)


class Proxy:
    """
    One proxy's router on a stream of its own, fed bytes.
    """

    def __init__(
        self, component: str, resources: int, strategy: str = "random", table=None
    ) -> None:
        self.component = component
        self.clock = Clock()
        self.resources = Resources()
        self.table = table or RequestTable(3600, 10**7, 10**7, 10**7, maxRetainedBytes=1 << 34)
        routing = Routing(
            component,
            TARGET,
            self.resources,
            STRATEGIES[strategy](self.resources, self.table),
            clock=self.clock,
        )
        self.router = IQRouter(routing, self.table, self.clock)
        self.socket = Socket(MemoryReactor())
        self.xs = FastXmlStream(xmlstream.ConnectAuthenticator(component))
        self.xs.makeConnection(self.socket)
        self.xs.dataReceived(HEADER % component.encode())
        self.socket.doWrite()  # the header the stream sent, as the reactor would
        self.router.makeConnection(self.xs)
        self.router.connectionInitialized()
        for n in range(resources):
            self.resources.available("%s/w%d" % (TARGET, n))
        self._ids = 0

    def request(self, requester: str) -> bytes:
        """
        The bytes of a request from C{requester}.
        """
        self._ids += 1
        return b"<iq type='get' id='q%d' to='%s' from='%s'>%s</iq>" % (
            self._ids,
            self.component.encode(),
            requester.encode(),
            PAYLOAD,
        )

    def roundTrip(self, requester: str) -> int:
        """
        One request in and its answer back; the nanoseconds of CPU the
        component's calls took.
        """
        request = self.request(requester)
        clock = time.thread_time_ns
        started = clock()
        self.xs.dataReceived(request)
        spent = clock() - started
        resource, translated = _FORWARDED.match(self.socket.last).groups()
        answer = b"<iq type='result' id='q%d' to='%s' from='%s'/>" % (
            self._ids,
            translated,
            resource,
        )
        started = clock()
        self.xs.dataReceived(answer)
        return spent + clock() - started


def measure(proxies, requesters, count: int, repeat: int) -> float:
    """
    The median over C{repeat} runs of the CPU per IQ, in microseconds,
    with C{count} IQs per run taken in turn by the C{proxies} from the
    C{requesters}.
    """
    runs = []
    gc.collect()
    for i in range(count // 5):  # warm-up
        proxies[i % len(proxies)].roundTrip(requesters[i % len(requesters)])
    for _ in range(repeat):
        spent = 0
        for i in range(count):
            proxy = proxies[i % len(proxies)]
            spent += proxy.roundTrip(requesters[i % len(requesters)])
        runs.append(spent / count / 1000)
    return statistics.median(runs)


def requesterJIDs(count: int) -> list[str]:
    return ["u%d@d%d.example/r" % (n, n % 1000) for n in range(count)]


def axisResources(args) -> dict:
    series = {}
    for strategy in sorted(STRATEGIES):
        points = []
        for resources in args.resources:
            proxy = Proxy("proxy.example.org", resources, strategy)
            cpu = measure([proxy], requesterJIDs(1000), args.count, args.repeat)
            points.append({"x": resources, "cpu_us_per_iq": cpu})
            report("resources", strategy, resources, cpu)
        series[strategy] = points
    return {"x": "online resources", "series": series}


def axisRequesters(args) -> dict:
    points = []
    for count in args.requesters:
        proxy = Proxy("proxy.example.org", 2)
        requesters = requesterJIDs(count)
        # Every requester has asked once before: the table's counts and
        # the strategy have seen each of them.
        measure([proxy], requesters, count, 1)
        cpu = measure([proxy], requesters, max(args.count, 0), args.repeat)
        points.append({"x": count, "cpu_us_per_iq": cpu})
        report("requesters", "random", count, cpu)
    return {"x": "distinct requesters", "series": {"random": points}}


def axisInflight(args) -> dict:
    points = []
    for held in args.inflight:
        proxy = Proxy("proxy.example.org", 2)
        for n in range(held):
            proxy.xs.dataReceived(proxy.request("holder%d@d%d.example/r" % (n % 1000, n % 97)))
        assert len(proxy.table) == held
        cpu = measure([proxy], requesterJIDs(1000), args.count, args.repeat)
        points.append({"x": held, "cpu_us_per_iq": cpu})
        report("inflight", "random", held, cpu)
    return {"x": "requests in flight", "series": {"random": points}}


def axisProxies(args) -> dict:
    points = []
    for count in args.proxies:
        tracemalloc.start()
        proxies = [Proxy("proxy%d.example.org" % n, 2) for n in range(count)]
        memory = tracemalloc.get_traced_memory()[0] / count
        tracemalloc.stop()
        cpu = measure(proxies, requesterJIDs(1000), args.count, args.repeat)
        points.append({"x": count, "cpu_us_per_iq": cpu, "bytes_per_proxy": memory})
        report("proxies", "random", count, cpu, "%.0f KiB allocated per proxy" % (memory / 1024,))
        del proxies
    return {"x": "proxies in one process", "series": {"random": points}}


def report(axis: str, series: str, x: int, cpu: float, extra: str = "", per: str = "IQ") -> None:
    print("%-10s %-13s %7d  %6.1f us/%s  %s" % (axis, series, x, cpu, per, extra), flush=True)


def machine() -> dict:
    """
    What the figures were measured on.
    """
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.partition(":")[2].strip()
            break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "commit": commit(),
        "load_average": os.getloadavg(),
    }


def axisPresence(args) -> dict:
    """
    The target's available presence as a fleet's storm brings it: every
    resource's, again and again, with its delay stamp.
    """
    points = []
    for resources in args.resources:
        proxy = Proxy("proxy.example.org", 0)
        handler = TargetPresenceHandler(
            JID(proxy.component), JID(TARGET), proxy.resources, proxy.clock
        )
        handler.parent = proxy.xs  # what its subscription request is sent on
        handler.makeConnection(proxy.xs)
        handler.connectionInitialized()
        storm = b"".join(
            b"<presence to='%s' xml:lang='en' from='%s/w%d'><delay stamp='2026-11-28T19:01:22Z'"
            b" from='example.org' xmlns='urn:xmpp:delay'/></presence>"
            % (proxy.component.encode(), TARGET.encode(), n)
            for n in range(resources)
        )
        reads = [storm[i : i + 65536] for i in range(0, len(storm), 65536)]
        runs = []
        for run in range(args.repeat + 1):
            started = time.thread_time_ns()
            for _ in range(max(1, args.count * 10 // resources)):
                for data in reads:
                    proxy.xs.dataReceived(data)
            spent = time.thread_time_ns() - started
            if run:  # the first is the warm-up, which learns the resources
                runs.append(spent / (max(1, args.count * 10 // resources) * resources) / 1000)
        assert len(proxy.resources) == resources
        cpu = statistics.median(runs)
        points.append({"x": resources, "cpu_us_per_presence": cpu})
        report("presence", "storm", resources, cpu, per="presence")
    return {"x": "online resources (each presence again and again)", "series": {"storm": points}}


AXES = {
    "resources": axisResources,
    "requesters": axisRequesters,
    "inflight": axisInflight,
    "proxies": axisProxies,
    "presence": axisPresence,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--axes", default=",".join(AXES), help="comma-separated: " + ", ".join(AXES))
    parser.add_argument("--count", type=int, default=5000, help="IQs per run (default 5000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per point; the median is kept")
    parser.add_argument("--resources", type=numbers, default=numbers("2,10,100,1000,10000"))
    parser.add_argument("--requesters", type=numbers, default=numbers("1,10,100,1000,10000,100000"))
    parser.add_argument("--inflight", type=numbers, default=numbers("0,100,1000,10000,100000"))
    parser.add_argument("--proxies", type=numbers, default=numbers("1,10,100"))
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON to FILE")
    args = parser.parse_args(argv)
    results = {
        "benchmark": "scaling",
        "command": "benchmarks/scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "measure": "CPU per proxied IQ (request and answer), in process, microseconds",
        "axes": {},
    }
    for axis in args.axes.split(","):
        results["axes"][axis] = AXES[axis](args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
