"""
--log-format json: the lines, where they go, and how twistd is told.
"""

import dataclasses
import io
import json
import sys

import pytest
from twisted.application.service import Application
from twisted.logger import FileLogObserver, ILogObserver, Logger
from twisted.python.logfile import LogFile

from client_proxy.config import ConfigError, ProcessConfig, build, commandLine, load
from client_proxy.logs import formatJSON, jsonLogObserver, twistdLogFile
from client_proxy.tap import makeProcessService


def test_one_json_object_a_line():
    out = io.StringIO()
    log = Logger(namespace="client_proxy.test", observer=jsonLogObserver(out))
    log.warn(
        "Cannot connect {jid}: {why}", jid="proxy.example.org", why="connection refused",
        proxy="proxy.example.org", event="connect_failed", reason="connection refused",
    )
    log.info("plain {x}", x=1)
    first, second = [json.loads(line) for line in out.getvalue().splitlines()]
    assert first == {
        "time": first["time"],
        "level": "warning",
        "proxy": "proxy.example.org",
        "event": "connect_failed",
        "reason": "connection refused",
        "text": "Cannot connect proxy.example.org: connection refused",
        "source": "client_proxy.test",
    }
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    assert (second["level"], second["proxy"], second["event"], second["text"]) == (
        "info", None, None, "plain 1")


def test_a_failure_keeps_its_traceback():
    out = io.StringIO()
    log = Logger(observer=jsonLogObserver(out))
    try:
        1 / 0
    except ZeroDivisionError:
        log.failure("It broke")
    [line] = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "critical"
    assert record["text"].startswith("It broke\n") and "ZeroDivisionError" in record["text"]


def test_where_the_lines_go(tmp_path):
    assert twistdLogFile(None) is sys.stdout
    assert twistdLogFile({"logfile": "-", "nodaemon": False}) is sys.stdout
    assert twistdLogFile({"logfile": None, "nodaemon": True}) is sys.stdout
    file = twistdLogFile({"logfile": str(tmp_path / "proxy.log"), "nodaemon": True})
    assert isinstance(file, LogFile) and file.path == str(tmp_path / "proxy.log")
    file.close()


def test_the_application_logs_through_the_observer():
    """twistd reads the application's ILogObserver before it logs."""
    application = Application("client-proxy")
    configuration = ProcessConfig(
        (build(jid="proxy.example.org", target="s@example.org", secret="s", environ={}),),
        logFormat="json",
    )
    makeProcessService(configuration, []).setServiceParent(application)
    observer = application.getComponent(ILogObserver)
    assert isinstance(observer, FileLogObserver)
    assert observer.formatEvent is formatJSON
    text = makeProcessService(dataclasses.replace(configuration, logFormat="text"), [])
    other = Application("client-proxy")
    text.setServiceParent(other)
    assert other.getComponent(ILogObserver) is None, "twistd's own"


def test_the_setting():
    given = {"jid": "proxy.example.org", "target": "s@example.org", "secret": "s"}
    assert load([commandLine(dict(given, **{"log-format": "json"}))]).logFormat == "json"
    assert load([commandLine(given)]).logFormat == "text"
    with pytest.raises(ConfigError) as raised:
        load([commandLine(dict(given, **{"log-format": "xml"}))])
    assert str(raised.value) == "--log-format 'xml' is unknown; choose text or json"
