"""
What a flood costs the component: CPU per refused request against a
forwarded one, and the process's memory once a flood has filled every
budget.

In process, with no server: the IQ router on a stream that discards what
it writes, fed IQs as the fast path hands them over (attributes and
payload bytes). That isolates the component's own work; the server's
share is measured by iq_throughput.py.

  .venv/bin/python benchmarks/flood.py
  .venv/bin/python benchmarks/flood.py --json flood.json

Printed: microseconds of CPU per request forwarded, refused past the
domain's share, and refused by the deny list; then the resident memory
(VmRSS) before and after a flood of large gets from many domains, with
what the table holds.
"""

import argparse
import json
import time
from pathlib import Path

from twisted.internet.task import Clock

from client_proxy.access import AccessPolicy
from client_proxy.dispatch import RandomStrategy
from client_proxy.inflight import RequestTable
from client_proxy.presence import Resources
from client_proxy.router import IQRouter
from client_proxy.routing import Routing

COMPONENT = "proxy.example.org"
TARGET = "service@example.org"


class DiscardingStream:
    def send(self, data):
        pass

    def addObserver(self, *args, **kw):
        pass


def router(maxInFlight=100_000, deny=(), retained=64 << 20):
    clock = Clock()
    resources = Resources()
    for i in range(4):
        resources.available(TARGET + "/w%d" % i)
    table = RequestTable(3600, 1000, maxInFlight, maxRetainedBytes=retained)
    routing = Routing(
        COMPONENT,
        TARGET,
        resources,
        RandomStrategy(resources, table),
        access=AccessPolicy(TARGET, deny=deny),
        clock=clock,
    )
    r = IQRouter(routing, table, clock)
    stream = DiscardingStream()
    r.makeConnection(stream)
    r.connectionInitialized()
    return r, stream


def perRequest(handler, iqs, payload):
    started = time.process_time()
    for attributes in iqs:
        handler(dict(attributes), payload)
    return (time.process_time() - started) / len(iqs) * 1e6


def requests(count, domains, prefix):
    return [
        {"type": "get", "id": "%s%d" % (prefix, i), "to": COMPONENT,
         "from": "u%d@d%d.example/r%d" % (i % 1000, i % domains, i)}
        for i in range(count)
    ]


def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--json", metavar="FILE")
    options = parser.parse_args(argv)
    payload = b"<query xmlns='urn:test'/>"
    figures = {}

    r, stream = router()
    figures["forwarded_us"] = perRequest(r.iqReceived, requests(options.count, 1000, "a"), payload)

    r, stream = router(maxInFlight=400)  # a domain's share: 100
    r.iqReceived({"type": "get", "id": "x", "to": COMPONENT, "from": "u@d0.example/r"}, payload)
    flood = requests(options.count, 1, "b")
    figures["refused_domain_share_us"] = perRequest(r.iqReceived, flood, payload)

    r, stream = router(deny=["d0.example"])
    figures["refused_denied_us"] = perRequest(r.iqReceived, flood, payload)

    # The worst flood: every budget filled with large gets from many domains.
    before = rss()
    r, stream = router()
    large = b"<query xmlns='urn:test'>" + b"x" * 200_000 + b"</query>"
    started = time.monotonic()
    refused = 0
    for attributes in requests(100_000, 5000, "c"):
        kept = len(r.table)
        r.iqReceived(attributes, large)
        refused += len(r.table) == kept
    figures.update(
        flood_requests=100_000,
        flood_payload_bytes=len(large),
        flood_in_flight=len(r.table),
        flood_refused=refused,
        flood_retained_bytes=r.table.retainedBytes,
        rss_before_bytes=before,
        rss_after_bytes=rss(),
        flood_seconds=time.monotonic() - started,
    )
    for name, value in figures.items():
        print("%-26s %s" % (name, "%.1f" % value if isinstance(value, float) else "{:,}".format(value)))
    if options.json:
        Path(options.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
