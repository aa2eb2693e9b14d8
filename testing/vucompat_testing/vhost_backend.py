"""A vhost-user backend played by a test (threads on a unix socket), and the two
client steps the relay tests need: for the tests of the relay engine and of the
relay process without OVS."""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path

from vucompat.core.mode import Abi
from vucompat.vhostuser import protocol as vu

#: the mode the relays of these tests enforce
ABI = Abi(0xFF, 0x0F, 1, 256, 256)


class Backend:
    """A vhost-user backend that answers GET_FEATURES with all ones (the relay masks
    it), one thread per connection; `accepted` counts connections."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(64)
        self.accepted = 0
        self.reading = threading.Event()
        self.reading.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while True:
                self.reading.wait()
                try:
                    message = vu.recv_blocking(conn, 3600)
                except (EOFError, OSError, vu.ProtocolError, TimeoutError):
                    return
                vu.close_fds(message.fds)
                if message.request == vu.GET_FEATURES:
                    reply = vu.Message(vu.GET_FEATURES, vu.VERSION | vu.FLAG_REPLY, struct.pack("<Q", 2**64 - 1))
                    try:
                        conn.setblocking(True)
                        vu.send(conn, reply)
                    except OSError:
                        return

    def close(self) -> None:
        self.sock.close()


def features(sock: socket.socket) -> int:
    """Ask GET_FEATURES on `sock`; return the answer."""
    vu.send(sock, vu.request(vu.GET_FEATURES))
    return vu.recv_blocking(sock, 5).u64()


def connect(path: Path) -> socket.socket:
    """A connected unix stream socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    return sock
