"""A TCP forwarder between the operator and the API server that a test can cut and restore, as a control-plane
upgrade or a network partition cuts an operator off (the API server itself stays up for everyone else)."""

import contextlib
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit


class Forwarder:
    def __init__(self, upstream: str) -> None:
        """``upstream``: the API server's URL (https://host:port)."""
        parts = urlsplit(upstream)
        assert parts.hostname and parts.port
        self.upstream = (parts.hostname, parts.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.url = f"{parts.scheme}://127.0.0.1:{self.port}"
        self.open = True
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        """Close every connection, and every new one at once (a client sees resets and closed connections)."""
        with self._lock:
            self.open = False
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._sockets.clear()

    def restore(self) -> None:
        with self._lock:
            self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                if not self.open:
                    downstream.close()
                    continue
                try:
                    upstream = socket.create_connection(self.upstream, timeout=5)
                except OSError:
                    downstream.close()
                    continue
                upstream.settimeout(None)
                self._sockets.update((downstream, upstream))
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        for s in (source, target):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def forwarder(upstream: str) -> Iterator[Forwarder]:
    running = Forwarder(upstream)
    try:
        yield running
    finally:
        running.close()
