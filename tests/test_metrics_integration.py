"""
Metrics end to end: a twistd process of the installed package serving
/metrics and /healthz while requests flow through a private Prosody; the
errors of a metrics port in use and of a missing prometheus_client.
"""

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from harness.ports import free_port
from harness.prosody import Prosody
from harness.proxy import ROOT, TWISTD, ProxyProcess, client_proxy, run_twistd
from harness.xmpp import Responder, error_condition
from tests.conftest import COMPONENT, online, user


def scrape(port):
    """
    The samples of http://127.0.0.1:PORT/metrics of this proxy, as
    C{{(name, frozenset of the other labels): value}}; C{None} while
    nothing listens there yet.
    """
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % (port,), timeout=5) as r:
            assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            text = r.read().decode()
    except urllib.error.URLError:
        return None
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            if labels.pop("jid", None) == COMPONENT:
                samples[sample.name, frozenset(labels.items())] = sample.value
    return samples


class Metrics:
    """The metrics a proxy serves on C{port}."""

    def __init__(self, port):
        self.port = port

    def get(self, name, **labels):
        samples = scrape(self.port) or {}
        return samples.get((name, frozenset(labels.items())))

    def total(self, name):
        """The sum of the samples of C{name}, whatever their labels."""
        samples = scrape(self.port) or {}
        return sum(value for (sample, _), value in samples.items() if sample == name)

    def wait_for(self, name, expected, timeout=10.0, **labels):
        """Wait until metric C{name} is C{expected} (or C{expected(value)})."""
        check = expected if callable(expected) else (lambda v: v == expected)
        deadline = time.monotonic() + timeout
        while True:
            value = self.get(name, **labels)
            if value is not None and check(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    "%s%r is %r, not %r\n%s" % (name, labels, value, expected, scrape(self.port))
                )
            time.sleep(0.05)


def start(proxy, target):
    """A proxy serving its metrics on a port the system chooses."""
    p = proxy(target, "--metrics", "tcp:0:interface=127.0.0.1")
    metrics = Metrics(p.listening_port("Site"))
    metrics.wait_for("client_proxy_connected", 1)
    return p, metrics


def test_metrics_move_as_requests_flow(prosody, target, clients, proxy):
    p, metrics = start(proxy, target)
    assert metrics.get("client_proxy_resources_online") == 0
    assert metrics.get("client_proxy_requests_in_flight") == 0
    requester = clients("user", "metrics")

    # No resource online: the component answers service-unavailable.
    answer = requester.iq(COMPONENT)
    assert error_condition(answer) == "service-unavailable"
    assert metrics.get("client_proxy_requests_received_total") == 1
    assert metrics.get("client_proxy_requests_forwarded_total") == 0
    assert (
        metrics.get("client_proxy_answers_total", type="error", condition="service-unavailable")
        == 1
    )

    service = clients(user(target), "a", Responder)
    online(p, service.jid)
    metrics.wait_for("client_proxy_resources_online", 1)
    for _ in range(3):
        assert requester.iq(COMPONENT).get("type") == "result"
    assert metrics.get("client_proxy_requests_received_total") == 4
    assert metrics.get("client_proxy_requests_forwarded_total") == 3
    assert metrics.get("client_proxy_answers_total", type="result", condition="") == 3
    assert metrics.get("client_proxy_answer_seconds_count") == 3
    assert metrics.get("client_proxy_answer_seconds_bucket", le="+Inf") == 3
    assert 0 < metrics.get("client_proxy_answer_seconds_sum") < 5
    assert metrics.get("client_proxy_requests_in_flight") == 0
    assert metrics.get("client_proxy_connected") == 1


def test_a_request_held_is_in_flight(prosody, target, clients, proxy):
    p, metrics = start(proxy, target)
    service = clients(user(target), "a", Responder, answer=False)
    online(p, service.jid)
    requester = clients("user", "held")
    requester.send("<iq type='get' id='held-1' to='%s'><query xmlns='urn:test'/></iq>" % COMPONENT)
    metrics.wait_for("client_proxy_requests_in_flight", 1)
    assert metrics.get("client_proxy_requests_forwarded_total") == 1
    assert metrics.get("client_proxy_answer_seconds_count") == 0

    # The resource goes: the get has nowhere to go, and is answered.
    service.kill()
    answer = requester.wait_for(lambda s: s.get("id") == "held-1")
    assert error_condition(answer) == "service-unavailable"
    metrics.wait_for("client_proxy_requests_in_flight", 0)
    metrics.wait_for("client_proxy_resources_online", 0)
    assert (
        metrics.get("client_proxy_answers_total", type="error", condition="service-unavailable")
        == 1
    )


def test_only_metrics_is_served(prosody, target, proxy):
    p, metrics = start(proxy, target)
    for path in ("/", "/other"):
        try:
            urllib.request.urlopen("http://127.0.0.1:%d%s" % (metrics.port, path), timeout=5)
        except urllib.error.HTTPError as e:
            assert e.code == 404
        else:
            raise AssertionError("%s was served" % (path,))


def test_metrics_from_the_config_file(prosody, target, clients, tmp_path):
    """C{metrics} at the top level of the file; proxy.tac with the file."""
    component, secret = next(iter(prosody.components.items()))
    path = tmp_path / "proxy.toml"
    path.write_text(
        'metrics = "tcp:0:interface=127.0.0.1"\n'
        'endpoint = "tcp:host=127.0.0.1:port=%d"\n'
        "[[proxy]]\n"
        'jid = "%s"\n'
        'target = "%s"\n'
        'secret = "%s"\n' % (prosody.component_port, component, target, secret)
    )
    process = ProxyProcess(
        ["-y", str(ROOT / "proxy.tac")], env={"CLIENT_PROXY_CONFIG": str(path)}, workdir=tmp_path
    )
    with process:
        metrics = Metrics(process.listening_port("Site"))
        metrics.wait_for("client_proxy_connected", 1)
        service = clients(user(target), "a", Responder)
        online(process, service.jid)
        assert clients("user", "file").iq(COMPONENT).get("type") == "result"
        assert metrics.get("client_proxy_answers_total", type="result", condition="") == 1


BAD = "nonsense:9100"


def test_a_bad_metrics_endpoint_on_the_command_line():
    code, output = run_twistd(
        ["client-proxy", "--jid", COMPONENT, "--target", "s@example.org", "--secret", "x",
         "--metrics", BAD]
    )
    assert code != 0
    assert "--metrics 'nonsense:9100' does not parse as a server endpoint" in output
    assert "Traceback" not in output


def test_a_bad_metrics_endpoint_in_the_file(tmp_path):
    path = tmp_path / "proxy.toml"
    path.write_text(
        'metrics = "%s"\n[[proxy]]\njid = "%s"\ntarget = "s@example.org"\nsecret = "x"\n'
        % (BAD, COMPONENT)
    )
    code, output = run_twistd(["client-proxy", "--config", str(path)])
    assert code != 0
    assert "proxy.toml: metrics: 'nonsense:9100' does not parse as a server endpoint" in output
    assert "Traceback" not in output


def test_a_bad_metrics_endpoint_in_the_environment():
    code, output = run_twistd(
        ["-y", str(ROOT / "proxy.tac")],
        env={
            "CLIENT_PROXY_JID": COMPONENT,
            "CLIENT_PROXY_TARGET": "s@example.org",
            "CLIENT_PROXY_SECRET": "x",
            "CLIENT_PROXY_METRICS": "tcp:notaport",
        },
    )
    assert code != 0
    assert "CLIENT_PROXY_METRICS 'tcp:notaport' does not parse" in output
    assert "Traceback" not in output


def health(port):
    """What http://127.0.0.1:PORT/healthz answers: status and JSON body."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % (port,), timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_for_health(port, status, timeout=15.0):
    """Wait until /healthz answers C{status}; return its body."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answered, body = health(port)
        except urllib.error.URLError:
            answered = body = None
        if answered == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError("/healthz answers %r: %r, not %d" % (answered, body, status))
        time.sleep(0.05)


def test_health_through_a_server_restart():
    """
    /healthz is 200 while the component is authenticated, and says whether
    the target is online; 503 while the server is down; 200 again once the
    proxy is back.
    """
    with Prosody() as server:
        port = free_port()
        target = "health@example.org"
        p = client_proxy(server, target, "--metrics", "tcp:%d:interface=127.0.0.1" % port).start()
        try:
            body = wait_for_health(port, 200)
            assert body == {
                "healthy": True,
                "proxies": {
                    COMPONENT: {"connected": True, "target_online": False, "resources_online": 0}
                },
            }
            service = Responder(server.c2s_port, "health", "a").connect()
            online(p, service.jid)
            assert health(port)[1]["proxies"][COMPONENT]["target_online"] is True

            server.stop()
            p.wait_for_log("Disconnected from")
            body = wait_for_health(port, 503)
            assert body["healthy"] is False
            assert body["proxies"][COMPONENT]["connected"] is False
            service.kill()

            server.start()
            p.wait_for_log("Authenticated as", count=2, timeout=15)
            assert wait_for_health(port, 200)["proxies"][COMPONENT]["connected"] is True
        finally:
            p.remove()


def listening():
    """A socket listening on a free loopback port, and its endpoint string."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    return taken, "tcp:%d:interface=127.0.0.1" % (taken.getsockname()[1],)


PROXY = ["client-proxy", "--jid", COMPONENT, "--target", "s@example.org", "--secret-file",
         __file__, "--endpoint", "tcp:host=127.0.0.1:port=1"]


def test_a_metrics_port_in_use():
    """One line and exit status 1, not a traceback."""
    taken, endpoint = listening()
    with taken:
        code, output = run_twistd(PROXY + ["--metrics", endpoint])
    assert code == 1
    [line] = [line for line in output.splitlines() if "client-proxy:" in line]
    assert line.endswith(
        "client-proxy: metrics: cannot listen on %s: [Errno 98] Address already in use"
        % (endpoint,)
    )
    assert "Traceback" not in output


def test_a_metrics_port_in_use_as_a_daemon(tmp_path):
    """
    Daemonized, twistd's parent process says so and exits with status 1,
    rather than wait for ever; the pid file is removed.
    """
    taken, endpoint = listening()
    with taken:
        done = subprocess.run(
            [TWISTD, "--pidfile", "twistd.pid", "-l", "twistd.log", *PROXY, "--metrics", endpoint],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    # twistd's parent prints the first 100 bytes; the daemon, as it exits
    # (after it removed its pid file), the line in its log.
    assert "client-proxy: metrics: cannot listen on tcp:" in done.stdout + done.stderr
    line = "client-proxy: metrics: cannot listen on %s: [Errno 98]" % (endpoint,)
    log = tmp_path / "twistd.log"
    deadline = time.monotonic() + 10
    while line not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    assert "Traceback" not in log.read_text()
    assert not (tmp_path / "twistd.pid").exists()


def test_without_prometheus_client(tmp_path):
    """
    Without the metrics extra the proxy runs, and --metrics is a
    configuration error saying what to install.
    """
    (tmp_path / "prometheus_client.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'prometheus_client'\")\n"
    )
    env = {"PYTHONPATH": str(tmp_path)}
    code, output = run_twistd(["client-proxy", "--help"], env=env)
    assert code == 0 and "--metrics=" in output, output
    code, output = run_twistd(PROXY + ["--metrics", "tcp:0:interface=127.0.0.1"], env=env)
    assert code == 1
    assert output.strip() == (
        "client-proxy: serving metrics needs the Python package prometheus_client "
        "(No module named 'prometheus_client'): pip install 'client-proxy[metrics]'"
    ), output
