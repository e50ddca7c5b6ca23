"""
A TCP relay between a test's process and a server, which the test can cut:
the component's connection drops as it does when a network or a server
fails, while both ends stay up.
"""

import socket
import threading
from types import TracebackType


class Relay:
    """
    Listens on a port of loopback chosen by the system (no race for a free
    port) and relays every connection to C{(host, port)}, byte for byte.

    @ivar port: where to connect to reach the server through the relay.
    @ivar connections: how many connections it has accepted.
    """

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        self._open: list[socket.socket] = []
        self._paused = False
        self._lock = threading.Condition()
        threading.Thread(target=self._accept, name="relay", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._paused:
                client.close()  # as a server that is down
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, server]
                self.connections += 1
                self._lock.notify_all()
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def wait_for_connections(self, count: int, timeout: float = 10.0) -> None:
        """
        Wait until C{count} connections in all have been accepted.
        """
        with self._lock:
            if not self._lock.wait_for(lambda: self.connections >= count, timeout):
                raise AssertionError("%d connections through the relay, not %d" % (self.connections, count))

    def cut(self) -> None:
        """
        Cut every connection open now, both ways; new ones are relayed.
        """
        with self._lock:
            cut, self._open = self._open, []
        for sock in cut:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def pause(self) -> None:
        """
        Cut every connection, and close each new one at once until
        L{resume}.
        """
        self._paused = True
        self.cut()

    def resume(self) -> None:
        self._paused = False

    def close(self) -> None:
        self._listener.close()
        self.cut()

    def __enter__(self) -> "Relay":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
