"""
Prometheus metrics: what the router reports, counted per proxy, the
process's own, and the /metrics and /healthz resources.
"""

import json
import platform
import socket
import sys
import threading
import urllib.error
import urllib.request

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
import twisted
from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

import client_proxy
from client_proxy import jat
from client_proxy.config import (
    ConfigError,
    ProcessConfig,
    build,
    checkServerEndpoint,
    environment,
    load,
    readFile,
)
from client_proxy.inflight import RequestTable
from client_proxy.metrics import IMetrics, NoMetrics
from client_proxy.prometheus import (
    HealthResource,
    MetricsResource,
    PrometheusMetrics,
    processRegistry,
)
from client_proxy.presence import Resources
from client_proxy.routing import Routing
from client_proxy.router import IQRouter
from client_proxy.tap import Options, StartFailed, makeProcessService
from client_proxy.service import makeMetricsService, makeProxiesService
from harness.ports import PortTaken, on_free_ports
from tests.test_router import (
    COMPONENT,
    R1,
    R2,
    TARGET,
    USER,
    FirstStrategy,
    Stream,
    bounce,
    iq,
)

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
    metrics.outboundRequestReceived()
    metrics.outboundRequestReceived()
    metrics.outboundAnswerSent("result", "")
    metrics.outboundAnswerSent("error", "made-up")

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
    outbound = "client_proxy_outbound_answers_total"
    assert value(registry, "client_proxy_outbound_requests_received_total") == 2
    assert value(registry, outbound, type="result", condition="") == 1
    assert value(registry, outbound, type="error", condition="undefined-condition") == 1
    # Each direction has its own answers.
    assert value(registry, answers, type="error", condition="undefined-condition") is None


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


def routerReporting():
    """
    A router on a stub stream, reporting to a new registry: the stub, the
    clock, the target's resources, the router and the registry.
    """
    stub, clock, resources = Stream(), Clock(), Resources()
    table = RequestTable(timeout=30, maxPerRequester=3, maxTotal=5)
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(
        COMPONENT, registry, inFlight=table.__len__, online=resources.__len__
    )
    router = IQRouter(
        Routing(COMPONENT, TARGET, resources, FirstStrategy(resources), clock=clock),
        table,
        clock,
        metrics=metrics,
    )
    stub.connect(router)
    return stub, clock, resources, router, registry


def test_the_router_reports_to_prometheus():
    """The events of test_router.test_metrics, counted."""
    stub, clock, resources, router, registry = routerReporting()
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


def total(registry, name, jid=COMPONENT):
    """The sum of the samples C{name} of C{jid}, over their other labels."""
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name and sample.labels.get("jid") == jid
    )


def test_requests_from_the_target_are_counted_apart():
    """
    The target's requests to others, and their answers, have counters of
    their own; their answer time is not the implementing client's.
    """
    stub, clock, resources, router, registry = routerReporting()
    resources.available(R1)
    stub.receive(iq("get", R1, COMPONENT + "/" + USER, id="q1"))
    alias = stub.pop()["id"]
    clock.advance(2)
    stub.receive(iq("result", USER, COMPONENT, id=alias))
    stub.receive(iq("get", R1, COMPONENT, id="q2"))  # nobody there: bad-request
    stub.receive(iq("set", R1, COMPONENT + "/" + USER, id="q3"))
    clock.advance(30)

    def v(name, **labels):
        return value(registry, name, COMPONENT, **labels)

    outbound = "client_proxy_outbound_answers_total"
    assert v("client_proxy_outbound_requests_received_total") == 3
    assert v(outbound, type="result", condition="") == 1
    assert v(outbound, type="error", condition="bad-request") == 1
    assert v(outbound, type="error", condition="remote-server-timeout") == 1
    assert v("client_proxy_requests_received_total") == 0
    assert total(registry, "client_proxy_answers_total") == 0
    assert v("client_proxy_requests_timed_out_total") == 0
    assert v("client_proxy_answer_seconds_count") == 0
    assert v("client_proxy_requests_refused_total", reason="no_one_there") == 1


USERS = ("a@example.org/1", "b@example.net/2", "c@example.org/3")
#: Whom the target's resources ask: users, a server, nobody (the
#: component's bare JID).
REMOTES = (USER, "alice@example.org/phone", "example.net", "")

events = st.lists(
    st.one_of(
        st.tuples(
            st.just("request"),
            st.sampled_from(USERS),
            st.sampled_from(("get", "set")),
            st.sampled_from("0123"),
        ),
        st.tuples(
            st.just("outbound"),
            st.sampled_from((R1, R2)),
            st.sampled_from(("get", "set")),
            st.sampled_from(REMOTES),
            st.sampled_from("0123"),
        ),
        st.tuples(
            st.just("answer"),
            st.integers(0, 1000),
            st.sampled_from(("result", "error", "bounce")),
        ),
        st.tuples(st.just("online"), st.sampled_from((R1, R2))),
        st.tuples(st.just("offline"), st.sampled_from((R1, R2))),
        st.tuples(st.just("advance"), st.floats(0, 20)),
    ),
    max_size=40,
)


@settings(deadline=None)
@given(events)
def test_the_answers_counted_add_up_with_the_requests(events):
    """
    Whatever happens, once every request is answered or expired, each
    direction counts as many answers as requests, and as many as the
    answers sent.
    """
    stub, clock, resources, router, registry = routerReporting()
    for event in events:
        kind, *args = event
        if kind == "request":
            requester, type, id = args
            stub.receive(iq(type, requester, COMPONENT, id=id))
        elif kind == "outbound":
            resource, type, remote, id = args
            to = COMPONENT + "/" + remote if remote else COMPONENT
            stub.receive(iq(type, resource, to, id=id))
        elif kind == "answer":
            # Answer one of the requests the router sent, maybe again.
            index, type = args
            sent = [s for s in stub.output if s["type"] in ("get", "set")]
            if sent:
                request = sent[index % len(sent)]
                if type == "bounce":
                    stub.receive(bounce(request["to"], request["from"], id=request["id"]))
                else:
                    stub.receive(iq(type, request["to"], request["from"], id=request["id"]))
        elif kind == "online":
            resources.available(args[0])
        elif kind == "offline":
            resources.unavailable(args[0])
        else:
            clock.advance(args[0])
    clock.advance(router.table.timeout)

    assert len(router.table) == 0
    answers = [s for s in stub.output if s["type"] in ("result", "error")]
    toTarget = [s for s in answers if jat.bare(s["to"]) == TARGET]
    received = total(registry, "client_proxy_requests_received_total")
    assert received == total(registry, "client_proxy_answers_total")
    assert received == len(answers) - len(toTarget)
    outbound = total(registry, "client_proxy_outbound_requests_received_total")
    assert outbound == total(registry, "client_proxy_outbound_answers_total")
    assert outbound == len(toTarget)


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
        except (CannotListenError, ConfigError) as e:
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
    """Only /metrics and /healthz are served; everything else is not found."""
    registry = CollectorRegistry()
    PrometheusMetrics(A, registry, connected=lambda: True).requestForwarded()
    url = served(registry)

    def scrape():
        return [
            fetch(url + path)
            for path in ("/metrics", "/healthz", "/", "/other", "/metrics/x", "/healthz/x")
        ]

    metrics, health, *others = inThread(scrape)
    status, contentType, body = metrics
    assert status == 200
    assert contentType == "text/plain; version=0.0.4; charset=utf-8"
    assert 'client_proxy_requests_forwarded_total{jid="%s"} 1.0' % (A,) in body.decode()
    status, contentType, body = health
    assert (status, contentType) == (200, "application/json")
    assert json.loads(body)["proxies"][A]["connected"] is True
    assert [status for status, _, _ in others] == [404, 404, 404, 404]


def healthOf(registry):
    """What /healthz answers: its status, content type and JSON body."""
    request = DummyRequest([b""])
    body = HealthResource(registry).render_GET(request)
    contentType = request.responseHeaders.getRawHeaders(b"content-type")[0]
    return request.responseCode, contentType, json.loads(body)


def test_healthy_while_every_proxy_is_connected():
    registry = CollectorRegistry()
    connected = {A: False, B: True}
    PrometheusMetrics(A, registry, online=lambda: 0, connected=lambda: connected[A])
    PrometheusMetrics(B, registry, online=lambda: 2, connected=lambda: connected[B])
    assert healthOf(registry) == (
        503,
        b"application/json",
        {
            "healthy": False,
            "proxies": {
                A: {"connected": False, "target_online": False, "resources_online": 0},
                B: {"connected": True, "target_online": True, "resources_online": 2},
            },
        },
    )
    connected[A] = True
    status, _, body = healthOf(registry)
    assert (status, body["healthy"], body["proxies"][A]["connected"]) == (200, True, True)
    connected[B] = False
    assert healthOf(registry)[0] == 503


def test_no_proxy_is_no_health():
    assert healthOf(CollectorRegistry()) == (
        503,
        b"application/json",
        {"healthy": False, "proxies": {}},
    )


def test_the_process_and_the_version():
    """
    The registry of a process has the process's own metrics, and the
    versions running once a proxy reports to it.
    """
    registry = processRegistry()
    PrometheusMetrics(A, registry)
    versions = {
        "version": client_proxy.__version__,
        "twisted": twisted.__version__,
        "python": platform.python_version(),
    }
    assert registry.get_sample_value("client_proxy_build_info", versions) == 1
    for name in (
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
    ):
        assert registry.get_sample_value(name) > 0, name


def test_a_port_in_use_is_a_configuration_error():
    """
    Said in one line naming the endpoint, whether twistd starts the
    service (privileged start first) or an application does.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        endpoint = "tcp:%d:interface=127.0.0.1" % (taken.getsockname()[1],)
        for start in ("privilegedStartService", "startService"):
            service = makeMetricsService(endpoint, CollectorRegistry())
            with pytest.raises(ConfigError) as raised:
                getattr(service, start)()
            message = str(raised.value)
            assert message.startswith("metrics: cannot listen on %s: " % (endpoint,))
            assert "Address already in use" in message and "\n" not in message


def test_twistd_ends_on_a_port_in_use():
    """
    The process service turns it into an exit of one line that twistd's
    start-up also sees as an error (see test_metrics_integration).
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        endpoint = "tcp:%d:interface=127.0.0.1" % (taken.getsockname()[1],)
        process = makeProcessService(
            ProcessConfig((build(jid=A, target="s@example.org", secret="s"),), endpoint), []
        )
        with pytest.raises(StartFailed) as raised:
            process.privilegedStartService()
    assert isinstance(raised.value, Exception) and isinstance(raised.value, SystemExit)
    assert raised.value.code.startswith("client-proxy: metrics: cannot listen on " + endpoint)


@pytest.fixture
def withoutPrometheusClient(monkeypatch):
    """As if prometheus_client were not installed (no metrics extra)."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "client_proxy.prometheus")
    monkeypatch.delattr(client_proxy, "prometheus")


def test_metrics_need_prometheus_client(withoutPrometheusClient):
    configs = [build(jid=A, target="s@example.org", secret="s")]
    service = makeProxiesService(configs, Clock())
    assert isinstance(metricsOf(service.getServiceNamed(A)), NoMetrics)
    with pytest.raises(ConfigError) as raised:
        makeProxiesService(configs, Clock(), metrics="tcp:0:interface=127.0.0.1")
    assert str(raised.value).startswith(
        "serving metrics needs the Python package prometheus_client ("
    )
    assert str(raised.value).endswith("): pip install 'client-proxy[metrics]'")


def metricsOf(proxy):
    """The metrics the router of a proxy's service reports to."""
    return proxy.router.metrics


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
