"""
The log of a proxy run with C{--log-format json}, read as data: one JSON
object a line (L{client_proxy.logs}).
"""

import json
import time
from collections.abc import Callable

from tests.support.proxy import ProxyProcess

Event = dict[str, object]


def events(process: ProxyProcess) -> list[Event]:
    """
    The events logged so far (a line not yet complete is left out).
    """
    found = []
    for line in process.log().splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


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
