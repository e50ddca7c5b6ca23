"""
TLS to the server: ejabberd's component listener speaks TLS (C{tls: true})
with a certificate for C{localhost} signed by a CA made for the test. The
proxy connects with C{tls:host=...:port=...:trustRoots=DIR}; a certificate
it cannot trust, or one for another name, is a connection failure whose
log event says why and for which name. And through it, how ejabberd
refuses a handshake.
"""

import os
import secrets
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import COMPONENT
from harness.ejabberd import Ejabberd, ejabberd_available
from tests.support.events import wait_for_event
from harness.proxy import ProxyProcess
from tests.support.tls import Certificates, make_certificates
from harness.xmpp import Client, Responder

if not ejabberd_available():
    if os.environ.get("CI"):
        pytest.fail("ejabberd is not installed, and CI is set: the ejabberd tests must run", pytrace=False)
    pytest.skip("ejabberd is not installed (apt-get install -y ejabberd)", allow_module_level=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"), ["localhost"])


@pytest.fixture(scope="module")
def ejabberd(certificates) -> Iterator[Ejabberd]:
    with Ejabberd(component_certfile=certificates.server) as server:
        yield server


@pytest.fixture
def proxies():
    started = []

    def start(server, endpoint, target="tls@example.org", jid=None, secret=None):
        component, real = next(iter(server.components.items()))
        component, secret = jid or component, secret or real
        process = ProxyProcess([])
        (process.workdir / "secret").write_text(secret + "\n")
        process.args = [
            "client-proxy", "--jid", component, "--target", target,
            "--secret-file", str(process.workdir / "secret"),
            "--endpoint", endpoint, "--log-format", "json",
        ]
        started.append(process.start())
        return process

    yield start
    for process in started:
        process.remove()


def endpoint(host: str, port: int, trustRoots: Path | None = None) -> str:
    text = "tls:host=%s:port=%d" % (host, port)
    return text if trustRoots is None else text + ":trustRoots=" + str(trustRoots)


def test_tls_with_a_private_ca(ejabberd, certificates, proxies):
    target = "tls-%s@example.org" % (secrets.token_hex(3),)
    proxy = proxies(ejabberd, endpoint("localhost", ejabberd.component_port, certificates.ca), target)
    authenticated = wait_for_event(proxy, event="authenticated", proxy=COMPONENT)
    assert authenticated["text"] == "Authenticated as %s at localhost port %d (TLS)" % (
        COMPONENT, ejabberd.component_port)
    service = Responder(ejabberd.c2s_port, target.split("@")[0], "a").connect()
    requester = Client(ejabberd.c2s_port, "user", "tls").connect()
    try:
        wait_for_event(proxy, lambda e: e["text"] == "Resource online: " + service.jid)
        answer = requester.iq(COMPONENT)
        assert (answer.get("type"), answer.get("from")) == ("result", COMPONENT)
    finally:
        service.kill()
        requester.kill()


def test_a_certificate_not_trusted(ejabberd, proxies, tmp_path):
    """
    Trust roots that do not hold the CA: the handshake fails, an error
    naming the host, again at every retry.
    """
    other = make_certificates(tmp_path, ["localhost"])
    proxy = proxies(ejabberd, endpoint("localhost", ejabberd.component_port, other.ca))
    failed = wait_for_event(proxy, event="connect_failed", count=2)
    assert (failed["level"], failed["proxy"], failed["reason"]) == (
        "error", COMPONENT, "TLS certificate not trusted")
    assert failed["text"].startswith(
        "Cannot connect %s to localhost port %d (TLS): the server's TLS certificate for "
        "localhost is not trusted (certificate verify failed): give the folder of the CA "
        "that signed it with trustRoots=DIR in the endpoint; retry 2 in "
        % (COMPONENT, ejabberd.component_port))


def test_a_certificate_for_another_name(ejabberd, certificates, proxies):
    """
    The CA is trusted, but the certificate is for localhost, not
    127.0.0.1.
    """
    proxy = proxies(ejabberd, endpoint("127.0.0.1", ejabberd.component_port, certificates.ca))
    failed = wait_for_event(proxy, event="connect_failed")
    assert (failed["level"], failed["reason"]) == ("error", "TLS certificate name mismatch")
    assert "the server's TLS certificate is not valid for 127.0.0.1" in failed["text"]


def test_plain_tcp_to_a_port_that_speaks_tls(ejabberd, proxies):
    proxy = proxies(ejabberd, "tcp:host=127.0.0.1:port=%d" % ejabberd.component_port)
    failed = wait_for_event(proxy, event="connect_failed")
    assert (failed["level"], failed["reason"]) == ("warning", "closed before authentication")
    assert "if the port speaks TLS, the endpoint must be tls:" in failed["text"]


@pytest.mark.parametrize(
    "jid, secret", [("unknown.example.org", None), (COMPONENT, "not-the-secret")]
)
def test_ejabberd_refuses_a_handshake_alike_for_an_unknown_host_and_a_wrong_secret(
    ejabberd, certificates, proxies, jid, secret
):
    """
    ejabberd 23.01 answers both with a bare not-authorized (its own log
    says which): the log says both are possible.
    """
    proxy = proxies(
        ejabberd, endpoint("localhost", ejabberd.component_port, certificates.ca),
        jid=jid, secret=secret)
    failed = wait_for_event(proxy, event="connect_failed", proxy=jid)
    assert (failed["level"], failed["reason"]) == ("error", "handshake refused")
    assert failed["text"].startswith(
        "Authentication failed: the server refused the handshake for %s: the secret is "
        "wrong, or the server does not serve %s as a component" % (jid, jid))
    assert "not-the-secret" not in proxy.log()
