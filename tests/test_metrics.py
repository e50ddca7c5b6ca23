"""
Prometheus metrics: what the router reports, counted per proxy, and the
/metrics resource.
"""

import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from client_proxy.config import (
    ConfigError,
    build,
    checkServerEndpoint,
    environment,
    load,
    readFile,
)
from client_proxy.inflight import RequestTable
from client_proxy.metrics import IMetrics, MetricsResource, NoMetrics, PrometheusMetrics
from client_proxy.presence import Resources
from client_proxy.routing import Routing
from client_proxy.router import IQRouter
from client_proxy.tap import Options
from client_proxy.service import GracefulStop, makeMetricsService, makeProxiesService
from harness.ports import PortTaken, on_free_ports
from tests.test_router import COMPONENT, R1, R2, TARGET, USER, FirstStrategy, Stream, iq

A, B = "proxy.example.org", "proxy2.example.org"


def value(registry, name, jid=A, **labels):
    return registry.get_sample_value(name, dict(jid=jid, **labels))


def test_counts_what_the_router_reports():
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(A, registry)
    assert verifyObject(IMetrics, metrics)
    for _ in range(3):
        metrics.requestReceived()
    metrics.requestForwarded()
    metrics.requestForwarded()
    metrics.requestRetried()
    metrics.requestTimedOut()
    metrics.answerSent("result", "")
    metrics.answerSent("result", "")
    metrics.answerSent("error", "item-not-found")
    metrics.answerSent("error", "service-unavailable")
    metrics.answerSent("error", "service-unavailable")
    metrics.answerTime(0.003)
    metrics.answerTime(2.0)
    metrics.stanzaDropped("unsolicited")

    assert value(registry, "client_proxy_requests_received_total") == 3
    assert value(registry, "client_proxy_requests_forwarded_total") == 2
    assert value(registry, "client_proxy_requests_retried_total") == 1
    assert value(registry, "client_proxy_requests_timed_out_total") == 1
    answers = "client_proxy_answers_total"
    assert value(registry, answers, type="result", condition="") == 2
    assert value(registry, answers, type="error", condition="item-not-found") == 1
    assert value(registry, answers, type="error", condition="service-unavailable") == 2
    assert value(registry, "client_proxy_stanzas_dropped_total", reason="unsolicited") == 1
    assert value(registry, "client_proxy_answer_seconds_count") == 2
    assert value(registry, "client_proxy_answer_seconds_sum") == pytest.approx(2.003)
    assert value(registry, "client_proxy_answer_seconds_bucket", le="0.001") == 0
    assert value(registry, "client_proxy_answer_seconds_bucket", le="0.005") == 1
    assert value(registry, "client_proxy_answer_seconds_bucket", le="30.0") == 2


def test_unknown_conditions_are_undefined():
    """An implementing client cannot make up labels without end."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(A, registry)
    metrics.answerSent("error", "made-up")
    metrics.answerSent("error", "another-one")
    answers = "client_proxy_answers_total"
    assert value(registry, answers, type="error", condition="undefined-condition") == 2
    assert value(registry, answers, type="error", condition="made-up") is None


def test_gauges_are_read_when_scraped():
    registry = CollectorRegistry()
    state = {"inFlight": 0, "online": 0, "connected": False}
    PrometheusMetrics(
        A,
        registry,
        inFlight=lambda: state["inFlight"],
        online=lambda: state["online"],
        connected=lambda: state["connected"],
    )
    assert value(registry, "client_proxy_requests_in_flight") == 0
    assert value(registry, "client_proxy_resources_online") == 0
    assert value(registry, "client_proxy_connected") == 0
    state.update(inFlight=7, online=2, connected=True)
    assert value(registry, "client_proxy_requests_in_flight") == 7
    assert value(registry, "client_proxy_resources_online") == 2
    assert value(registry, "client_proxy_connected") == 1


def test_two_proxies_share_a_registry_with_their_own_labels():
    registry = CollectorRegistry()
    a = PrometheusMetrics(A, registry, online=lambda: 1)
    b = PrometheusMetrics(B, registry, online=lambda: 3)
    a.requestReceived()
    b.requestReceived()
    b.requestReceived()
    a.answerSent("result", "")
    b.answerSent("error", "forbidden")
    assert value(registry, "client_proxy_requests_received_total", A) == 1
    assert value(registry, "client_proxy_requests_received_total", B) == 2
    answers = "client_proxy_answers_total"
    assert value(registry, answers, A, type="result", condition="") == 1
    assert value(registry, answers, B, type="result", condition="") is None
    assert value(registry, answers, B, type="error", condition="forbidden") == 1
    assert value(registry, "client_proxy_resources_online", A) == 1
    assert value(registry, "client_proxy_resources_online", B) == 3
    # Another registry has metrics of its own.
    other = CollectorRegistry()
    PrometheusMetrics(A, other).requestReceived()
    assert value(other, "client_proxy_requests_received_total", A) == 1
    assert value(registry, "client_proxy_requests_received_total", A) == 1


def test_the_router_reports_to_prometheus():
    """The events of test_router.test_metrics, counted."""
    stub, clock, resources = Stream(), Clock(), Resources()
    table = RequestTable(timeout=30, maxPerRequester=3, maxTotal=5)
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(
        COMPONENT, registry, inFlight=table.__len__, online=resources.__len__
    )
    router = IQRouter(
        Routing(COMPONENT, TARGET, resources, FirstStrategy()), table, clock, metrics=metrics
    )
    stub.connect(router)

    stub.receive(iq("get", USER, COMPONENT))
    resources.available(R1)
    resources.available(R2)
    stub.receive(iq("get", USER, COMPONENT, id="2"))
    assert value(registry, "client_proxy_requests_in_flight", COMPONENT) == 1
    assert value(registry, "client_proxy_resources_online", COMPONENT) == 2
    clock.advance(0.5)
    stub.receive(iq("result", R1, COMPONENT + "/" + USER, id="2"))
    stub.receive(iq("result", R1, COMPONENT + "/" + USER, id="2"))
    stub.receive(iq("get", USER, COMPONENT, id="3"))
    resources.unavailable(R1)
    clock.advance(30)

    def v(name, **labels):
        return value(registry, name, COMPONENT, **labels)

    assert v("client_proxy_requests_received_total") == 3
    assert v("client_proxy_requests_forwarded_total") == 2
    assert v("client_proxy_requests_retried_total") == 1
    assert v("client_proxy_requests_timed_out_total") == 1
    assert v("client_proxy_answers_total", type="result", condition="") == 1
    assert v("client_proxy_answers_total", type="error", condition="service-unavailable") == 1
    assert v("client_proxy_answers_total", type="error", condition="remote-server-timeout") == 1
    assert v("client_proxy_stanzas_dropped_total", reason="unsolicited") == 1
    assert v("client_proxy_answer_seconds_count") == 1
    assert v("client_proxy_answer_seconds_sum") == 0.5
    assert v("client_proxy_requests_in_flight") == 0
    assert v("client_proxy_resources_online") == 1


def test_the_resource_renders_prometheus_text():
    registry = CollectorRegistry()
    PrometheusMetrics(A, registry, online=lambda: 2).requestReceived()
    request = DummyRequest([b""])
    body = MetricsResource(registry).render_GET(request)
    contentType = request.responseHeaders.getRawHeaders(b"content-type")[0]
    assert contentType == b"text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    [sample] = families["client_proxy_requests_received"].samples
    assert (sample.labels, sample.value) == ({"jid": A}, 1)
    [sample] = families["client_proxy_resources_online"].samples
    assert (sample.labels, sample.value) == ({"jid": A}, 2)


def fetch(url):
    """GET C{url}: its status, content type and body."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


@pytest.fixture
def served():
    """Serve a registry on a free loopback port; stopped after the test."""
    services = []

    def listen(registry, port):
        service = makeMetricsService("tcp:%d:interface=127.0.0.1" % (port,), registry)
        try:
            service.startService()
        except CannotListenError as e:
            raise PortTaken(e)  # since on_free_ports found it free: another one
        services.append(service)
        return "http://127.0.0.1:%d" % (port,)

    def serve(registry):
        return on_free_ports(lambda port: listen(registry, port), 1)

    yield serve
    for service in services:
        service.stopService()


def inThread(f):
    """
    Run C{f} in a thread while the reactor works in this one, and return
    its result (the reactor is iterated, not run: it could not run again).
    """
    results = []
    thread = threading.Thread(target=lambda: results.append(f()))
    thread.start()
    while thread.is_alive():
        reactor.iterate(0.01)
    thread.join()
    return results[0]


def test_served_over_http(served):
    """Only /metrics is served; everything else is not found."""
    registry = CollectorRegistry()
    PrometheusMetrics(A, registry).requestForwarded()
    url = served(registry)

    def scrape():
        return [fetch(url + path) for path in ("/metrics", "/", "/other", "/metrics/x")]

    metrics, root, other, below = inThread(scrape)
    status, contentType, body = metrics
    assert status == 200
    assert contentType == "text/plain; version=0.0.4; charset=utf-8"
    assert 'client_proxy_requests_forwarded_total{jid="%s"} 1.0' % (A,) in body.decode()
    assert [root[0], other[0], below[0]] == [404, 404, 404]


def metricsOf(proxy):
    """The metrics the router of a proxy's service reports to."""
    [stop] = [child for child in proxy if isinstance(child, GracefulStop)]
    return stop.router.metrics


def test_no_metrics_without_an_endpoint():
    service = makeProxiesService([build(jid=A, target="s@example.org", secret="s")], Clock())
    assert [child.name for child in service] == [A]
    assert isinstance(metricsOf(service.getServiceNamed(A)), NoMetrics)


def test_the_proxies_service_serves_metrics():
    configs = [
        build(jid=A, target="s@example.org", secret="s"),
        build(jid=B, target="t@example.org", secret="s"),
    ]
    service = makeProxiesService(configs, Clock(), metrics="tcp:0:interface=127.0.0.1")
    assert [child.name for child in service] == [A, B, "metrics"]
    a, b = metricsOf(service.getServiceNamed(A)), metricsOf(service.getServiceNamed(B))
    assert isinstance(a, PrometheusMetrics)
    assert (a.jid, b.jid) == (A, B)
    assert a._families is b._families


# Configuration: --metrics, the file's top-level metrics, CLIENT_PROXY_METRICS.

FILE = """\
metrics = "tcp:9100:interface=127.0.0.1"

[[proxy]]
jid = "proxy.example.org"
target = "s@example.org"
secret = "s"
"""


def test_the_endpoint_must_parse():
    assert checkServerEndpoint("tcp:9100:interface=127.0.0.1") == "tcp:9100:interface=127.0.0.1"
    assert checkServerEndpoint("unix:/run/client-proxy/metrics") == "unix:/run/client-proxy/metrics"
    with pytest.raises(ConfigError) as raised:
        checkServerEndpoint("tcp:nine", "--metrics")
    assert str(raised.value).startswith(
        "--metrics 'tcp:nine' does not parse as a server endpoint (such as "
        "tcp:9100:interface=127.0.0.1): "
    )


def test_metrics_in_the_file(tmp_path):
    path = tmp_path / "proxy.toml"
    path.write_text(FILE)
    assert readFile(str(path)).metrics == "tcp:9100:interface=127.0.0.1"
    path.write_text(FILE.replace("tcp:9100", "tcp:nine"))
    with pytest.raises(ConfigError) as raised:
        readFile(str(path))
    assert "proxy.toml: metrics: 'tcp:nine:interface=127.0.0.1' does not parse" in str(
        raised.value
    )
    path.write_text(FILE.replace('"tcp:9100:interface=127.0.0.1"', "9100"))
    with pytest.raises(ConfigError) as raised:
        readFile(str(path))
    assert "proxy.toml: metrics: must be a string, not an integer (9100)" in str(raised.value)
    path.write_text(FILE.split("\n", 1)[1])
    assert readFile(str(path)).metrics is None


def test_metrics_from_the_environment(tmp_path):
    path = tmp_path / "proxy.toml"
    path.write_text(FILE)

    def metrics(env):
        return load([environment(env)]).metrics

    single = {"CLIENT_PROXY_JID": A, "CLIENT_PROXY_TARGET": "s@example.org",
              "CLIENT_PROXY_SECRET": "s"}
    assert metrics(single) is None
    assert metrics({"CLIENT_PROXY_CONFIG": str(path)}) == "tcp:9100:interface=127.0.0.1"
    env = {"CLIENT_PROXY_CONFIG": str(path), "CLIENT_PROXY_METRICS": "tcp:9200"}
    assert metrics(env) == "tcp:9200"
    with pytest.raises(ConfigError) as raised:
        metrics(dict(single, CLIENT_PROXY_METRICS="tcp:nine"))
    assert str(raised.value).startswith("CLIENT_PROXY_METRICS 'tcp:nine' does not parse")


def test_the_metrics_option(tmp_path):
    options = Options()
    options.parseOptions(["--jid", A, "--target", "s@example.org", "--secret", "s"])
    assert options["metrics"] is None
    options = Options()
    options.parseOptions(
        ["--jid", A, "--target", "s@example.org", "--secret", "s", "--metrics", "tcp:9100"]
    )
    assert options["metrics"] == "tcp:9100"
    with pytest.raises(SystemExit) as raised:
        Options().parseOptions(
            ["--jid", A, "--target", "s@example.org", "--secret", "s", "--metrics", "tcp:nine"]
        )
    assert str(raised.value).startswith("client-proxy: --metrics 'tcp:nine' does not parse")

    path = tmp_path / "proxy.toml"
    path.write_text(FILE)
    options = Options()
    options.parseOptions(["--config", str(path)])
    assert options["metrics"] == "tcp:9100:interface=127.0.0.1"
    options = Options()
    options.parseOptions(["--config", str(path), "--metrics", "tcp:9200"])
    assert options["metrics"] == "tcp:9200"
