"""
Telling systemd how the service is doing (C{Type=notify}): the
C{sd_notify} protocol, one datagram to the socket named by
C{$NOTIFY_SOCKET}, written with the standard library alone.
"""

import os
import socket
from collections.abc import Mapping


def notify(state: str, environ: Mapping[str, str] = os.environ) -> bool:
    """
    Send C{state} (C{READY=1}, C{STATUS=...}, C{STOPPING=1}, several
    separated by newlines) to systemd, if it runs this process with a
    notification socket; otherwise do nothing.

    @return: whether it was sent.
    """
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError:
        return False
    return True
