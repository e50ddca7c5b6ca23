"""
Loopback ports for the servers the harness starts (Linux: C{/proc}).

Prosody and ejabberd cannot be told to listen on port 0 and say which port
they got, so they are given ports that are free when L{free_port} looks:
another program may take one before the server binds it. A server that
finds a port taken raises L{PortTaken} from its start, and L{on_free_ports}
starts it again on new ports; a server counts as started once its own
process listens on its ports (L{listening}), not when something answers
there.
"""

import os
import socket
from typing import Callable, TypeVar

from harness.processes import tree

T = TypeVar("T")

#: The state of a listening socket in /proc/net/tcp.
TCP_LISTEN = "0A"


class PortTaken(Exception):
    """
    A server could not listen on a port: another program has it.
    """


def free_port() -> int:
    """
    A TCP port of 127.0.0.1 that is free right now.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def on_free_ports(start: Callable[..., T], count: int, attempts: int = 5) -> T:
    """
    C{start(port, ...)} on C{count} ports free now; while it raises
    L{PortTaken}, again on new ones, C{attempts} times in all. What
    C{start} returns.

    @raise PortTaken: every attempt found a port taken.
    """
    for _ in range(attempts - 1):
        try:
            return start(*(free_port() for _ in range(count)))
        except PortTaken:
            pass
    return start(*(free_port() for _ in range(count)))


def _listening_inodes(port: int) -> set[str]:
    """
    The inodes of the sockets listening on 127.0.0.1:C{port} (or on every
    address), from /proc/net/tcp.
    """
    wanted = {"0100007F:%04X" % (port,), "00000000:%04X" % (port,)}
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return {row[9] for row in rows if row[1] in wanted and row[3] == TCP_LISTEN}


def listening(pid: int, port: int) -> bool:
    """
    Whether C{pid}, or one of its descendants, holds a socket listening on
    127.0.0.1:C{port}: that port is the server's, not another program's.
    """
    sockets = {"socket:[%s]" % (inode,) for inode in _listening_inodes(port)}
    if not sockets:
        return False
    for process in tree(pid):
        folder = "/proc/%d/fd" % (process,)
        try:
            fds = os.listdir(folder)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(os.path.join(folder, fd)) in sockets:
                    return True
            except OSError:
                continue
    return False
