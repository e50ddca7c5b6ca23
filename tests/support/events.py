"""
The log events of a proxy, read as data, as C{--log-format json} writes
them (L{client_proxy.logs}): the fields C{level}, C{proxy}, C{event},
C{reason}, C{text}... The harness has twistd keep every event
(L{harness.proxy.ProxyProcess.events}); each is read here through the
product's own JSON formatter.
"""

import json
import time
from collections.abc import Callable

from client_proxy.logs import formatJSON
from harness.proxy import ProxyProcess

Event = dict[str, object]


def events(process: ProxyProcess) -> list[Event]:
    """
    The events logged so far, as C{--log-format json} writes them.
    """
    return [json.loads(formatJSON(event)) for event in process.events()]


def matching(process: ProxyProcess, **fields: object) -> list[Event]:
    """
    The events logged so far whose fields have the values given.
    """
    return [e for e in events(process) if all(e.get(k) == v for k, v in fields.items())]


def wait_for_event(
    process: ProxyProcess,
    predicate: Callable[[Event], bool] | None = None,
    timeout: float = 10.0,
    count: int = 1,
    **fields: object,
) -> Event:
    """
    Wait until the C{count}-th event with the values of C{fields} (and for
    which C{predicate} holds) is logged, and return it.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in matching(process, **fields) if predicate is None or predicate(e)]
        if len(found) >= count:
            return found[count - 1]
        if time.monotonic() > deadline or process.process.poll() is not None:
            raise AssertionError(
                "no event %r (%d of %d) in the proxy's log:\n%s"
                % (fields, len(found), count, process.log())
            )
        time.sleep(0.05)
