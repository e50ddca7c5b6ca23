"""
The connection monitor's pace of reconnection: standby only while each
connection ends in conflict.
"""

from twisted.python.failure import Failure
from twisted.words.protocols.jabber.error import StreamError

from client_proxy.service import ConnectionMonitor


def ended(monitor, condition=None):
    """A connection made, then ended (with a stream error C{condition})."""
    monitor.connected(None)
    if condition is not None:
        monitor.streamErrorReceived(Failure(StreamError(condition)))
    monitor.disconnected(Failure(ConnectionError("closed")))


def test_conflict_is_standby_at_a_fixed_interval():
    monitor = ConnectionMonitor("proxy.example.org", "tcp:host=x:port=1", 2.0)
    for _ in range(5):
        ended(monitor, "conflict")
        assert monitor.standby
        assert monitor.retryDelay(1) == 2.0


def test_a_refused_secret_after_a_conflict_backs_off():
    monitor = ConnectionMonitor("proxy.example.org", "tcp:host=x:port=1", 2.0)
    ended(monitor, "conflict")
    delays = []
    for _ in range(6):
        ended(monitor, "not-authorized")
        assert not monitor.standby
        delays.append(monitor.retryDelay(1))
    assert delays == sorted(delays) and delays[-1] > 10


def test_a_dead_server_after_a_conflict_backs_off():
    """No connection at all: ClientService counts the failed attempts."""
    monitor = ConnectionMonitor("proxy.example.org", "tcp:host=x:port=1", 2.0)
    ended(monitor, "conflict")
    assert monitor.retryDelay(1) == 2.0
    assert monitor.retryDelay(2) > 2.0 or monitor.retryDelay(3) > 2.0
    assert not monitor.standby
    assert monitor.retryDelay(8) > 10
