"""
Two instances for one component host on Prosody: one serves, one stands by
and takes over when the first dies.
"""

import signal
import time

from harness.xmpp import Responder
from tests.conftest import COMPONENT, online, user


def test_standby_takes_over(prosody, target, clients, proxy):
    service = clients(user(target), "a", Responder)
    active = proxy(target)
    online(active, service.jid)
    standby = proxy(target, "--standby-interval", "0.2")
    standby.wait_for_log("On standby: another connection serves " + COMPONENT)
    time.sleep(1.5)
    log = standby.log()
    assert log.count("On standby") == 1, "said once, not at every try"
    assert "Scheduling retry" not in log and "[error]" not in log.lower()
    assert "Authenticated" not in log

    requester = clients("user", "failover")
    assert requester.iq(COMPONENT).get("type") == "result"
    active.stop(signal.SIGKILL)
    killed = time.monotonic()
    standby.wait_for_log("Taking over: %s is served here now" % COMPONENT)
    online(standby, service.jid)
    while requester.iq(COMPONENT).get("type") != "result":
        time.sleep(0.05)
    print("first proxied answer %.2f s after the active instance was killed"
          % (time.monotonic() - killed))
    assert time.monotonic() - killed < 5
