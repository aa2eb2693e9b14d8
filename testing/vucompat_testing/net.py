"""Loopback addresses for the daemons the tests start."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port the kernel says is free on `host` now (for raft addresses,
    QEMU's `-incoming`); someone else may take it before it is used."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
