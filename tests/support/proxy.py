"""A TCP forwarder on loopback whose link a test can cut and heal.

The cluster tests put one between each pair of Raft nodes: ``cut()`` closes
every connection through it and refuses new ones (accepted, then closed at
once, as a dead link looks to pysyncobj), ``heal()`` lets them through
again.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import threading


def bind_low_port(low: int = 20000, high: int = 29999) -> socket.socket:
    """A listening socket on a free loopback port in ``[low, high]`` (below the
    kernel's ephemeral range, so its address sorts before any ephemeral one)."""
    for _ in range(200):
        port = random.randint(low, high)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        sock.listen(16)
        return sock
    raise RuntimeError(f"no free port in {low}-{high}")


class LinkProxy:
    """Forwards connections made to :attr:`address` to ``target`` (``host:port``)."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self._listener = bind_low_port()
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def cut(self) -> None:
        self._cut.set()
        self._close_all()

    def heal(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._stop.set()
        self._close_all()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(5)

    def _close_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _serve(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, one: socket.socket, other: socket.socket) -> None:
        """Copy both ways until either side closes or the link is cut."""
        selector = selectors.DefaultSelector()
        for sock in (one, other):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        peer = {one: other, other: one}
        try:
            while not self._stop.is_set() and not self._cut.is_set():
                for key, _ in selector.select(timeout=0.2):
                    source = key.fileobj
                    assert isinstance(source, socket.socket)
                    data = source.recv(65536)
                    if not data:
                        return
                    peer[source].setblocking(True)
                    peer[source].sendall(data)
                    peer[source].setblocking(False)
        except OSError:
            return
        finally:
            selector.close()
            for sock in (one, other):
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._sockets.difference_update((one, other))
