"""
Each way a component connection fails against a real Prosody, and the log
event that says so: the proxy, the endpoint in words, the reason, the
retry and its delay.
"""

import re
import secrets

from tests.conftest import COMPONENT
from tests.support.events import wait_for_event
from harness.ports import free_port
from harness.proxy import client_proxy


def started(prosody, *options, secret=None, jid=None):
    process = client_proxy(prosody, "failures@example.org", *options, "--log-format", "json",
                           secret=secret)
    if jid is not None:
        process.args[process.args.index("--jid") + 1] = jid
    return process.start()


def test_connection_refused(prosody):
    port = free_port()
    process = started(prosody, "--endpoint", "tcp:host=127.0.0.1:port=%d" % port)
    try:
        second = wait_for_event(process, event="connect_failed", count=2)
        assert (second["level"], second["proxy"], second["reason"]) == (
            "warning", COMPONENT, "connection refused")
        assert second["text"].startswith(
            "Cannot connect %s to 127.0.0.1 port %d: connection refused; retry 2 in "
            % (COMPONENT, port))
        assert re.fullmatch(r"\d+\.\d s", second["text"].rsplit(" in ", 1)[1]), "rounded"
    finally:
        process.remove()


def test_dns_failure(prosody):
    process = started(prosody, "--endpoint", "tcp:host=nowhere.invalid:port=5347")
    try:
        failed = wait_for_event(process, event="connect_failed")
        assert (failed["level"], failed["reason"]) == ("warning", "DNS failure")
        assert "Cannot connect %s to nowhere.invalid port 5347: DNS lookup failed" % (
            COMPONENT,) in failed["text"]
    finally:
        process.remove()


def test_secret_refused(prosody):
    process = started(prosody, secret="not-the-secret")
    try:
        failed = wait_for_event(process, event="connect_failed", count=2)
        assert (failed["level"], failed["reason"], failed["proxy"]) == (
            "error", "secret refused", COMPONENT)
        assert failed["text"].startswith(
            "Authentication failed: the server refused the secret for %s (server at "
            "127.0.0.1 port %d); retry 2 in " % (COMPONENT, prosody.component_port))
        assert "not-the-secret" not in process.log()
    finally:
        process.remove()


def test_host_unknown(prosody):
    unknown = "unknown-%s.example.org" % (secrets.token_hex(3),)
    process = started(prosody, jid=unknown)
    try:
        failed = wait_for_event(process, event="connect_failed")
        assert (failed["level"], failed["reason"], failed["proxy"]) == (
            "error", "host unknown", unknown)
        assert "the server does not serve %s as a component (host-unknown)" % (
            unknown,) in failed["text"]
    finally:
        process.remove()
