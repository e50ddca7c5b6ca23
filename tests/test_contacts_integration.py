"""
The component as a contact, end to end: users subscribe to it through a
private Prosody and see it available while a resource of the target is
online.
"""

import os
import re
import sqlite3
import stat
import time

import pytest

from client_proxy.contacts import DomainRate
from harness.proxy import run_twistd
from harness.xmpp import Client, Responder, bare, tag
from tests.conftest import COMPONENT, online, user
from tests.support.hostile import HostileComponent


def fan_of(target: str) -> str:
    """A user of its own for each test: Prosody keeps rosters all session."""
    return user(target) + "-fan"


def subscribe(client: Client) -> None:
    """
    Ask for the component's presence; the component approves.
    """
    client.send("<presence type='subscribe' to='%s'/>" % COMPONENT)
    client.wait_for(
        lambda el: tag(el) == "presence"
        and el.get("from") == COMPONENT
        and el.get("type") == "subscribed"
    )


def states(client: Client) -> list[bool]:
    """
    The component's availability as told to C{client} so far, in order.
    """
    return [
        el.get("type") is None
        for el in client.received()
        if tag(el) == "presence"
        and el.get("from") == COMPONENT
        and el.get("type") in (None, "unavailable")
    ]


def sees(client: Client, available: bool, timeout: float = 5.0) -> None:
    """
    Wait until the last presence C{client} got from the component says
    C{available}.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        told = states(client)
        if told and told[-1] == available:
            return
        time.sleep(0.05)
    raise AssertionError(
        "%r was not told the component is %s; told: %r"
        % (client, "available" if available else "unavailable", states(client))
    )


def test_available_while_a_resource_is_online(prosody, target, clients, proxy):
    p = proxy(target)
    p.wait_for_log("Asking %s for a presence subscription" % target)
    fan = clients(fan_of(target), "phone")
    subscribe(fan)
    sees(fan, False)

    first = clients(user(target), "a", Responder)
    online(p, first.jid)
    sees(fan, True)

    first.kill()
    sees(fan, False)

    second = clients(user(target), "b", Responder)
    online(p, second.jid)
    sees(fan, True)


def test_two_resources_one_availability(prosody, target, clients, proxy):
    """
    The component is unavailable only once the last resource is gone.
    """
    a = clients(user(target), "a", Responder)
    b = clients(user(target), "b", Responder)
    p = proxy(target)
    online(p, a.jid)
    online(p, b.jid)
    fan = clients(fan_of(target), "phone")
    subscribe(fan)
    sees(fan, True)
    a.kill()
    p.wait_for_log("Resource offline: " + a.jid)
    b.iq(COMPONENT)  # a round trip through the proxy: anything sent has arrived
    assert states(fan)[-1] is True
    b.kill()
    sees(fan, False)


def test_a_subscriber_logging_in_gets_the_current_presence(prosody, target, clients, proxy):
    """
    Clients cannot send probes: the server probes the component for them
    when they log in (RFC 6121, 4.3.1), and delivers the answer.
    """
    service = clients(user(target), "a", Responder)
    p = proxy(target)
    online(p, service.jid)
    fan = clients(fan_of(target), "phone")
    subscribe(fan)
    fan.close()

    laptop = clients(fan_of(target), "laptop")
    sees(laptop, True)
    laptop.close()

    service.kill()
    p.wait_for_log("Resource offline: " + service.jid)
    tablet = clients(fan_of(target), "tablet")
    sees(tablet, False)


def test_subscribers_survive_a_restart(prosody, target, clients, proxy, tmp_path):
    state = str(tmp_path / "subscribers.db")
    first = proxy(target, "--state-file", state)
    first.wait_for_log("Asking %s for a presence subscription" % target)
    fan = clients(fan_of(target), "phone")
    subscribe(fan)
    service = clients(user(target), "a", Responder)
    online(first, service.jid)
    sees(fan, True)

    first.stop()
    sees(fan, False)  # the proxy said so as it stopped
    service.kill()

    second = proxy(target, "--state-file", state)
    second.wait_for_log("Asking %s for a presence subscription" % target)
    again = clients(user(target), "b", Responder)
    online(second, again.jid)
    sees(fan, True)  # the fan did not ask again: the file had it


def test_without_a_state_file_the_subscription_is_cancelled(prosody, target, clients, proxy):
    """
    A restart without a state file forgets the subscribers; the probe of a
    subscriber's server then gets C{unsubscribed} (RFC 6121, 4.3.2), and
    the user's roster shows the subscription gone.
    """
    first = proxy(target)
    first.wait_for_log("Asking %s for a presence subscription" % target)
    fan = clients(fan_of(target), "phone")
    subscribe(fan)
    fan.close()
    first.stop()

    second = proxy(target)
    second.wait_for_log("Asking %s for a presence subscription" % target)
    laptop = clients(fan_of(target), "laptop")
    laptop.wait_for(
        lambda el: tag(el) == "presence"
        and el.get("from") == COMPONENT
        and el.get("type") == "unsubscribed"
    )


def test_presence_from_users_is_not_forwarded(prosody, target, clients, proxy):
    service = clients(user(target), "a", Responder)
    p = proxy(target)
    online(p, service.jid)
    fan = clients(fan_of(target), "phone")
    fan.send("<presence to='%s'><status>hello</status></presence>" % COMPONENT)
    fan.send("<presence type='unavailable' to='%s'/>" % COMPONENT)
    subscribe(fan)
    fan.send("<presence type='unsubscribed' to='%s'/>" % COMPONENT)
    # A request after the presence, through the proxy: once it is answered,
    # anything the presence caused has been sent.
    assert fan.iq(COMPONENT).get("type") == "result"

    from_fan = [
        el for el in service.received()
        if tag(el) == "presence" and bare(el.get("from", "")) == bare(fan.jid)
    ]
    assert from_fan == []
    assert [el for el in service.subscribe_requests if el.get("from") != COMPONENT] == []
    assert [el for el in fan.received() if el.get("type") == "error"] == []
    assert "Traceback" not in p.log()


def test_bad_state_file(tmp_path):
    code, output = run_twistd(
        ["client-proxy", "--jid", COMPONENT, "--target", "s@example.org", "--secret", "x",
         "--state-file", str(tmp_path / "missing" / "state.db")]
    )
    assert code != 0
    assert "--state-file" in output and "does not exist" in output
    assert "Traceback" not in output


# A hostile domain


@pytest.fixture
def evil(prosody):
    """
    The hostile domain of the test server, connected.
    """
    with HostileComponent.of(prosody) as component:
        yield component


def test_a_subscribe_flood_from_a_hostile_domain(prosody, target, clients, proxy, evil, tmp_path):
    """
    A domain that forges senders at will floods subscribes and probes. Past
    its burst, its subscribes are refused at DomainRate's pace; every one
    gets exactly one answer; the subscribers stored are those approved; the
    flood writes no line of its own in the log, only a summary when the
    proxy stops; and a user of another domain still subscribes.
    """
    flood = 2000
    state = tmp_path / "subscribers.db"
    p = proxy(target, "--state-file", str(state))
    p.wait_for_log("Asking %s for a presence subscription" % target)
    lines_before = len(p.log().splitlines())

    started = time.monotonic()
    evil.send_all(
        "<presence type='subscribe' from='%s' to='%s'/>"
        "<presence type='probe' from='%s' to='%s'/>"
        % (evil.jid("u%d" % i, "forged%d" % i), COMPONENT, evil.jid("p%d" % i), COMPONENT)
        for i in range(flood)
    )
    # The barrier: every subscribe and every probe is answered, once.
    answers = evil.wait_for(
        lambda el: tag(el) == "presence" and el.get("type") in ("subscribed", "unsubscribed"),
        count=2 * flood,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    by_user: dict[str, list[str]] = {}
    for el in answers:
        assert el.get("from") == COMPONENT
        by_user.setdefault(el.get("to"), []).append(el.get("type"))
    assert len(by_user) == 2 * flood, "one answer each"
    approved = {u for u, types in by_user.items() if types == ["subscribed"]}
    refused = {u for u, types in by_user.items() if u.startswith("u") and types == ["unsubscribed"]}
    assert len(approved) + len(refused) == flood
    assert all(by_user[evil.jid("p%d" % i)] == ["unsubscribed"] for i in range(flood))
    assert DomainRate.burst <= len(approved) <= DomainRate.burst + DomainRate.rate * elapsed + 1

    fan = clients(fan_of(target), "phone")
    subscribe(fan)  # another domain is not held back

    during = p.log().splitlines()[lines_before:]
    assert [line for line in during if evil.domain in line] == []
    assert len(during) < 10

    p.stop()  # gracefully: the summary is written as it stops
    after = p.log().splitlines()[lines_before:]
    assert len(after) < 25, "\n".join(after)
    summaries = [line for line in after if evil.domain in line]
    assert len(summaries) == 3, "\n".join(after)
    assert [line for line in summaries if "in the last 60 s" not in line] == []

    def counted(action: str, noun: str, reason: str) -> int:
        pattern = r" %s ([\d,]+) %s from .*: %s$" % (action, noun, re.escape(reason))
        [count] = [m.group(1) for line in summaries if (m := re.search(pattern, line))]
        return int(count.replace(",", ""))

    assert counted("refused", "subscriptions", "per-domain rate limit") == len(refused)
    assert counted("accepted", "subscriptions", "new subscribers") == len(approved)
    assert counted("refused", "probes", "not a subscriber") == flood

    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    with sqlite3.connect(state) as db:
        stored = {jid for (jid,) in db.execute("SELECT jid FROM subscribers")}
    assert stored == approved | {bare(fan.jid)}


def test_subscribers_are_capped_per_domain_and_denied_domains_refused(
    prosody, target, clients, proxy, evil, tmp_path
):
    """
    Past --max-subscribers-per-domain a subscribe is answered
    ``unsubscribed`` and nothing is stored; a denied domain's are refused.
    """
    state = tmp_path / "subscribers.db"
    p = proxy(target, "--state-file", str(state), "--max-subscribers-per-domain", "20")
    p.wait_for_log("Asking %s for a presence subscription" % target)
    evil.send_all(
        "<presence type='subscribe' from='%s' to='%s'/>" % (evil.jid("c%d" % i), COMPONENT)
        for i in range(50)
    )
    answers = evil.wait_for(
        lambda el: tag(el) == "presence" and el.get("type") in ("subscribed", "unsubscribed"),
        count=50,
    )
    assert sorted(el.get("type") for el in answers) == ["subscribed"] * 20 + ["unsubscribed"] * 30
    p.stop()
    with sqlite3.connect(state) as db:
        stored = {jid for (jid,) in db.execute("SELECT jid FROM subscribers")}
    assert stored == {el.get("to") for el in answers if el.get("type") == "subscribed"}

    denied = proxy(target, "--deny", evil.domain)
    denied.wait_for_log("Asking %s for a presence subscription" % target)
    evil.send("<presence type='subscribe' from='%s' to='%s'/>" % (evil.jid("late"), COMPONENT))
    [answer] = evil.wait_for(lambda el: el.get("to") == evil.jid("late"))
    assert answer.get("type") == "unsubscribed"
