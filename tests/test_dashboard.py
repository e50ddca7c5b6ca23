"""
contrib/grafana-dashboard.json queries only metrics and labels that a
proxy's registry has.
"""

import json
import re

from client_proxy.metrics import IMetrics
from client_proxy.prometheus import PrometheusMetrics, processRegistry
from harness.proxy import ROOT

DASHBOARD = json.loads((ROOT / "contrib" / "grafana-dashboard.json").read_text())

#: Labels that Prometheus adds when it scrapes.
ADDED = {"instance", "job"}

#: An argument for each parameter of the methods of L{IMetrics}.
ARGUMENTS = {"type": "error", "condition": "item-not-found", "reason": "no_resource", "seconds": 0.1}


def scraped():
    """
    The labels of each sample name of a process's registry in which a proxy
    reported every event of L{IMetrics}.
    """
    registry = processRegistry()
    metrics = PrometheusMetrics("proxy.example.org", registry)
    for name in IMetrics.names():
        if name == "retire":  # not an event: the proxy's series go
            continue
        method = IMetrics[name]
        getattr(metrics, name)(*(ARGUMENTS[p] for p in method.positional))
    labels: dict[str, set[str]] = {}
    for family in registry.collect():
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def queries():
    """
    Each query of the dashboard, with the legend it is drawn with: of the
    panels and of the variables.
    """
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", ()):
            yield target["expr"], target.get("legendFormat", "")
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            yield variable["query"]["query"], ""


METRIC = re.compile(r"\b(?:client_proxy|process)_[a-z_]+\b")


def test_every_metric_queried_exists():
    labels = scraped()
    queried = set()
    for expr, legend in queries():
        names = METRIC.findall(expr)
        assert names, expr
        queried.update(names)
        known = ADDED.union(*(labels.get(name, ()) for name in names))
        for name in names:
            assert name in labels, "%s queries %s, which no proxy reports" % (expr, name)
        # The labels it selects, groups by and draws.
        used = set(re.findall(r"\b([a-z_]+)\s*=~?", expr))
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            used.update(label.strip() for label in group.split(","))
        used.update(re.findall(r"{{(\w+)}}", legend))
        used.update(re.findall(r"label_values\([^,]*,\s*(\w+)\)", expr))
        assert used <= known, "%s uses labels %s that it does not have" % (expr, used - known)
    # Every family of the proxies is on the dashboard.
    reported = {name for name in labels if name.startswith("client_proxy_")}
    reported -= {n for n in reported if n.endswith(("_created", "_sum", "_count"))}
    assert reported <= queried, reported - queried


def test_the_dashboard_is_a_dashboard():
    """What Grafana needs to import it: a title, a uid, panels with a place."""
    assert DASHBOARD["title"] == "client-proxy" and DASHBOARD["uid"]
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in DASHBOARD["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["type"] == "row" or panel["targets"], panel["title"]
