"""
A fleet of workers behind the proxy, against Prosody: a rolling deploy
with drain and without it, and requests routed by the features the
workers advertise (XEP-0115).
"""

import itertools
import threading
from collections import Counter, defaultdict
from xml.sax.saxutils import quoteattr

from tests.conftest import COMPONENT, online, user
from harness.xmpp import Responder, error_condition, error_type, tag
from tests.test_features import worker_caps

CAPS_NS = "http://jabber.org/protocol/caps"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
PING = "urn:xmpp:ping"

_barriers = itertools.count()


class Worker(Responder):
    """
    A worker of the fleet: approves the component's subscription, answers
    every request after C{delay} seconds with who served it, announces its
    features (if it has any) as XEP-0115 caps and answers the component's
    disco#info for them; and knows how to leave.

    @ivar held: the requests received and not answered yet, by id.
    @ivar disco_queries: the disco#info requests received.
    """

    def __init__(self, port, user, resource, features=(), delay=0.05, **kw):
        super().__init__(port, user, resource, delay=delay, **kw)
        self.caps, self.info = worker_caps(features) if features else (None, b"")
        self.held = {}
        self.disco_queries = []
        self.answering = True
        self.condition = threading.Condition()

    def announce(self, show=None):
        """Send available presence, with C{show} and the caps if any."""
        show = "" if show is None else "<show>%s</show>" % (show,)
        caps = ""
        if self.caps is not None:
            caps = "<c xmlns='%s' hash=%s node=%s ver=%s/>" % (
                CAPS_NS, quoteattr(self.caps.hash), quoteattr(self.caps.node),
                quoteattr(self.caps.ver),
            )
        self.send("<presence>%s%s</presence>" % (show, caps))

    def handle(self, stanza):
        if tag(stanza) == "iq" and stanza.get("type") == "get":
            if stanza.find("{%s}query" % DISCO_INFO) is not None:
                self.disco_queries.append(stanza)
                self.send("<iq type='result' id=%s to=%s>%s</iq>" % (
                    quoteattr(stanza.get("id")), quoteattr(stanza.get("from")),
                    self.info.decode()))
                return True
            if stanza.get("from") == COMPONENT and stanza.find("{%s}ping" % PING) is not None:
                # Our own ping, sent through the component (see barrier).
                self.send("<iq type='result' id=%s to=%s/>" % (
                    quoteattr(stanza.get("id")), quoteattr(COMPONENT)))
                return True
        return super().handle(stanza)

    def _answer(self, request):
        with self.condition:
            self.held[request.get("id")] = request
        timer = threading.Timer(self.delay, self._finish, [request])
        timer.daemon = True
        timer.start()

    def _finish(self, request):
        payload = next(iter(request), None)
        namespace = "" if payload is None else payload.tag[1:].partition("}")[0]
        with self.condition:
            if not self.answering:
                return
            self.send(
                "<iq type='result' id=%s to=%s><served xmlns='urn:test' by=%s ns=%s/></iq>"
                % (quoteattr(request.get("id")), quoteattr(request.get("from")),
                   quoteattr(self.resource), quoteattr(namespace)))
            del self.held[request.get("id")]
            self.condition.notify_all()

    def barrier(self):
        """
        Wait until every request the component chose this worker for
        before it read our last presence has arrived: ping ourselves
        through the component. Its stream to us keeps its order, and it
        reads our stanzas in order too.
        """
        id = "barrier-%d" % (next(_barriers),)
        self.send("<iq type='get' id=%s to=%s><ping xmlns='%s'/></iq>" % (
            quoteattr(id), quoteattr(COMPONENT + "/" + self.jid), PING))
        answer = self.wait_for(lambda s: s.get("id") == id)
        assert answer.get("type") == "result"

    def drain(self):
        """
        Leave as the docs say a worker does on SIGTERM: show xa, answer
        what it holds and what is on its way, then go.
        """
        self.announce("xa")
        self.barrier()
        with self.condition:
            assert self.condition.wait_for(lambda: not self.held, 10)
        self.close()

    def quit(self):
        """
        Leave without draining, as a worker stopped while it holds a
        request: the request is not answered.
        """
        with self.condition:
            assert self.condition.wait_for(lambda: self.held, 10)
            self.answering = False
        self.close()


class Load:
    """
    A requester keeping C{window} set requests in flight, a new one sent
    as soon as one is answered, until stopped.
    """

    def __init__(self, requester, window=6, namespace="urn:test"):
        self.requester = requester
        self.window = window
        self.namespace = namespace
        self.answers = defaultdict(list)
        self.sent = 0
        self.running = False
        self.condition = threading.Condition()
        requester.on_stanza = self._received

    def _send(self):
        id = "load-%d" % (self.sent,)
        self.sent += 1
        self.requester.send("<iq type='set' id=%s to=%s><q xmlns='%s'/></iq>" % (
            quoteattr(id), quoteattr(COMPONENT), self.namespace))

    def _received(self, client, stanza):
        if tag(stanza) != "iq" or not stanza.get("id", "").startswith("load-"):
            return False
        with self.condition:
            self.answers[stanza.get("id")].append(stanza)
            if self.running:
                self._send()
            self.condition.notify_all()
        return True

    def start(self):
        with self.condition:
            self.running = True
            for _ in range(self.window):
                self._send()

    def wait_for_answers(self, count):
        """Wait until C{count} more requests are answered."""
        with self.condition:
            goal = len(self.answers) + count
            assert self.condition.wait_for(lambda: len(self.answers) >= goal, 20)

    def stop(self):
        """Stop sending; wait until every request sent is answered."""
        with self.condition:
            self.running = False
            assert self.condition.wait_for(lambda: len(self.answers) == self.sent, 20)
        # A round trip after the last answer: any answer sent twice would
        # have come before its answer.
        assert self.requester.iq(COMPONENT, type="set").get("type") == "result"

    def errors(self):
        return [a for answers in self.answers.values() for a in answers if a.get("type") == "error"]

    def served_by(self):
        return Counter(
            a.find("{urn:test}served").get("by")
            for answers in self.answers.values() for a in answers
            if a.get("type") == "result"
        )


def rolling_deploy(clients, proxy, target, leave):
    """
    Three workers serve set requests at a steady rate; each is replaced in
    turn: the new one comes online, then the old one leaves with
    C{leave}. Returns the load, once every request is answered.
    """
    old = [clients(user(target), "v1-%d" % n, Worker, presence=False) for n in range(3)]
    for worker in old:
        worker.announce()
    p = proxy(target, "--strategy", "round-robin")
    for worker in old:
        online(p, worker.jid)
    load = Load(clients("user", "load"))
    load.start()
    load.wait_for_answers(30)
    for n, worker in enumerate(old):
        new = clients(user(target), "v2-%d" % n, Worker, presence=False)
        new.announce()
        online(p, new.jid)
        leave(worker)
        p.wait_for_log("Resource offline: " + worker.jid)
        load.wait_for_answers(30)
    load.stop()
    assert all(len(answers) == 1 for answers in load.answers.values()), "answered twice"
    served = load.served_by()
    assert all(served["v1-%d" % n] > 0 and served["v2-%d" % n] > 0 for n in range(3)), served
    return p, load


def test_a_rolling_deploy_with_drain_shows_no_error(prosody, target, clients, proxy):
    p, load = rolling_deploy(clients, proxy, target, Worker.drain)
    print("with drain: %d requests, %d errors" % (len(load.answers), len(load.errors())))
    assert load.errors() == []
    assert p.log().count("Resource draining: ") == 3


def test_the_same_deploy_without_drain_shows_errors(prosody, target, clients, proxy):
    p, load = rolling_deploy(clients, proxy, target, Worker.quit)
    errors = load.errors()
    print("without drain: %d requests, %d errors" % (len(load.answers), len(errors)))
    assert len(errors) >= 3, "each worker left holding at least one request"
    assert {(error_type(e), error_condition(e)) for e in errors} == {
        ("wait", "recipient-unavailable")
    }


def test_a_draining_worker_gets_no_message_and_only_draining_is_none(
    prosody, target, clients, proxy
):
    worker = clients(user(target), "only", Worker, presence=False)
    worker.announce()
    p = proxy(target)
    online(p, worker.jid)
    requester = clients("user", "drain")
    assert requester.iq(COMPONENT, type="set").get("type") == "result"
    worker.announce("xa")
    worker.barrier()
    answer = requester.iq(COMPONENT, type="set")
    assert (error_type(answer), error_condition(answer)) == ("cancel", "service-unavailable")
    requester.send("<message to=%s type='chat'><body>hi</body></message>" % quoteattr(COMPONENT))
    bounced = requester.wait_for(lambda s: tag(s) == "message")
    assert error_condition(bounced) == "service-unavailable"
    worker.announce()  # serving again at once
    worker.barrier()
    assert requester.iq(COMPONENT, type="set").get("type") == "result"


def served_namespaces(worker):
    return Counter(r[0].tag[1:].partition("}")[0] for r in worker.requests)


def test_requests_go_where_their_namespace_is_served(prosody, target, clients, proxy):
    a = clients(user(target), "a", Worker, presence=False, features=["urn:a", "urn:common"])
    b = clients(user(target), "b", Worker, presence=False, features=["urn:b", "urn:common"])
    for worker in (a, b):
        worker.announce()
    p = proxy(target, "--route-by-features", "--strategy", "round-robin")
    p.wait_for_log("Learned the 2 features of ver", count=2)
    requester = clients("user", "features")
    for namespace in ("urn:a", "urn:b", "urn:common"):
        for _ in range(6):
            answer = requester.iq(COMPONENT, "<q xmlns='%s'/>" % namespace, type="set")
            assert answer.get("type") == "result", answer
    answer = requester.iq(COMPONENT, "<q xmlns='urn:c'/>", type="get")
    assert (error_type(answer), error_condition(answer)) == ("cancel", "service-unavailable")
    assert answer.get("from") == COMPONENT
    # Every request has its answer: the workers have seen all they will.
    assert served_namespaces(a) == {"urn:a": 6, "urn:common": 3}
    assert served_namespaces(b) == {"urn:b": 6, "urn:common": 3}
    assert [len(w.disco_queries) for w in (a, b)] == [1, 1]
    query = a.disco_queries[0]
    assert query.get("from") == COMPONENT
    assert query.find("{%s}query" % DISCO_INFO).get("node") == a.caps.node + "#" + a.caps.ver
    assert not any(s.find("{%s}query" % DISCO_INFO) is not None for s in requester.received())


def test_a_ver_shared_by_a_fleet_is_queried_once(prosody, target, clients, proxy):
    fleet = [
        clients(user(target), "w%d" % n, Worker, presence=False, features=["urn:job"])
        for n in range(20)
    ]
    for worker in fleet:
        worker.announce()
    p = proxy(target, "--route-by-features", "--strategy", "round-robin")
    for worker in fleet:
        online(p, worker.jid)
    p.wait_for_log("Learned the 1 features of ver")
    requester = clients("user", "fleet")
    for _ in range(40):
        answer = requester.iq(COMPONENT, "<q xmlns='urn:job'/>", type="set")
        assert answer.get("type") == "result"
    assert all(len(worker.requests) == 2 for worker in fleet)
    # Each worker has answered requests sent after its presence was read:
    # any query for it would have reached it before them.
    assert sum(len(worker.disco_queries) for worker in fleet) == 1
    assert p.log().count("Learned the 1 features of ver") == 1
