"""A TCP proxy that can cut a database off from the processes using it, as a network outage or a
database restart looks to them: what ``tests/search/tracking/test_storage_faults.py`` and ``benchmarks/chaos.py``
put between real ``blocknas`` workers and PostgreSQL. No part of a search uses it.
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["CuttableProxy"]


class CuttableProxy:
    """A TCP proxy from 127.0.0.1:<port> to ``target`` that can be cut: every connection closed, new ones
    accepted and closed at once, until :meth:`restore` (as a database restarting or a network outage looks).

    Args:
        target: The (host, port) it forwards to.

    Attributes:
        port: The loopback port it listens on.
        cuts: How many times :meth:`cut` was called.
        dropped: Connections it closed while cut (open ones cut, and new ones refused).
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.cut_off = threading.Event()
        self.open: list[socket.socket] = []
        self.cuts = 0
        self.dropped = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_off.is_set():
                with self.lock:
                    self.dropped += 1
                client.close()
                continue
            try:
                server = socket.create_connection(self.target)
            except OSError:  # the target itself is down: the client sees its connection closed
                client.close()
                continue
            with self.lock:
                self.open += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Close every open connection and refuse new ones until :meth:`restore`."""
        self.cut_off.set()
        with self.lock:
            self.cuts += 1
            self.dropped += len(self.open) // 2
            for end in self.open:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()
            self.open.clear()

    def restore(self) -> None:
        """Accept and forward connections again."""
        self.cut_off.clear()

    def close(self) -> None:
        """Cut everything and stop listening."""
        self.cut()
        self.listener.close()
