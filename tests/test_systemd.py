"""
Telling systemd (C{Type=notify}): the datagram, and C{READY=1} from a
real proxy once it has authenticated.
"""

import socket

import pytest

from client_proxy.systemd import notify
from harness.proxy import client_proxy


@pytest.fixture
def listening(tmp_path):
    """A datagram socket where systemd would listen, and its address."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(20)
    yield sock, path
    sock.close()


def test_notify(listening):
    sock, path = listening
    assert notify("READY=1", {"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"READY=1"


def test_an_abstract_socket():
    name = "client-proxy-test-%d" % (id(object()),)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert notify("STATUS=x", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"STATUS=x"


def test_nothing_without_systemd(tmp_path):
    assert not notify("READY=1", {})
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}), "no error either"


def test_ready_once_the_proxy_has_authenticated(prosody, target, listening):
    sock, path = listening
    process = client_proxy(prosody, target)
    process.env["NOTIFY_SOCKET"] = path
    process.start()
    try:
        received = []
        while not any(m.startswith("READY=1") for m in received):
            received.append(sock.recv(4096).decode())
        assert received[-1] == "READY=1\nSTATUS=1 of 1 proxies up"
        assert "Authenticated as" in process.log()
        process.stop()
        while received[-1] != "STOPPING=1":
            received.append(sock.recv(4096).decode())
    finally:
        process.remove()
