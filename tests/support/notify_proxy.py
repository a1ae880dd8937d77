"""A TCP proxy to PostgreSQL that never forwards notifications to the client.

It reproduces what a transaction-mode pooler (PgBouncer) does to LISTEN: the
connection works, LISTEN and NOTIFY succeed, and no notification ever reaches
the client. Everything else passes through unchanged; SSL and GSS encryption
requests are declined so the protocol stays readable.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg.conninfo

_ENCRYPTION_REQUESTS = (80877103, 80877104)  # SSLRequest, GSSENCRequest
_NOTIFICATION_RESPONSE = b"A"


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


def _startup(client: socket.socket, server: socket.socket) -> None:
    """Decline encryption, then hand the startup packet to the server."""
    while True:
        header = _read_exactly(client, 8)
        length, code = struct.unpack("!ii", header)
        if code in _ENCRYPTION_REQUESTS:
            client.sendall(b"N")
            continue
        server.sendall(header + _read_exactly(client, length - 8))
        return


def _client_to_server(client: socket.socket, server: socket.socket) -> None:
    while data := client.recv(65536):
        server.sendall(data)


def _server_to_client(server: socket.socket, client: socket.socket, dropped: list[int]) -> None:
    while True:
        kind = _read_exactly(server, 1)
        raw_length = _read_exactly(server, 4)
        (length,) = struct.unpack("!i", raw_length)
        body = _read_exactly(server, length - 4)
        if kind == _NOTIFICATION_RESPONSE:
            dropped.append(1)
            continue
        client.sendall(kind + raw_length + body)


class NotifyDroppingProxy:
    """Listens on 127.0.0.1:<port> and relays to ``host:port`` without notifications."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.dropped: list[int] = []  # one entry per notification withheld
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        server = socket.create_connection(self.target)
        self._sockets += [client, server]

        def shut_both() -> None:
            for sock in (client, server):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        def upstream() -> None:
            try:
                _client_to_server(client, server)
            except OSError:  # ConnectionError included: one side closed
                pass
            finally:
                shut_both()

        try:
            _startup(client, server)
            threading.Thread(target=upstream, daemon=True).start()
            _server_to_client(server, client, self.dropped)
        except OSError:
            pass
        finally:
            shut_both()
            client.close()
            server.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass


@contextmanager
def notify_dropping_dsn(dsn: str) -> Iterator[tuple[str, NotifyDroppingProxy]]:
    """``dsn`` rewritten to go through a NotifyDroppingProxy (TCP servers only)."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    host = str(params.get("host") or "127.0.0.1")
    if host.startswith("/"):
        raise RuntimeError("the notify-dropping proxy needs a TCP server, not a socket")
    proxy = NotifyDroppingProxy(host, int(params.get("port") or 5432))
    try:
        params.update(host="127.0.0.1", port=str(proxy.port), sslmode="disable")
        yield psycopg.conninfo.make_conninfo("", **params), proxy
    finally:
        proxy.close()
