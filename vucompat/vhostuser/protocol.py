"""The vhost-user control protocol, as much as vucompat speaks (QEMU
docs/interop/vhost-user.rst): the message header, the requests it reads or rewrites,
file descriptors as SCM_RIGHTS, and strict limits. Used by the relay and the probe.

A message is a 12-byte header (request u32, flags u32, size u32, little endian)
followed by `size` bytes of payload; file descriptors travel as ancillary data with
the header's bytes.
"""

from __future__ import annotations

import array
import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field

HEADER = struct.Struct("<III")
#: no request vucompat relays needs more (the largest, SET_CONFIG/GET_CONFIG, is 268 bytes)
MAX_PAYLOAD = 4096
#: SET_MEM_TABLE passes one fd per region: 8 in the baseline protocol
MAX_FDS = 8

VERSION = 0x1
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8
_KNOWN_FLAGS = 0x3 | FLAG_REPLY | FLAG_NEED_REPLY

GET_FEATURES = 1
SET_FEATURES = 2
SET_OWNER = 3
SET_VRING_NUM = 8
GET_PROTOCOL_FEATURES = 15
SET_PROTOCOL_FEATURES = 16
GET_QUEUE_NUM = 17


class ProtocolError(Exception):
    """A message that breaks the protocol or vucompat's limits: the connection closes."""


@dataclass
class Message:
    request: int
    flags: int
    payload: bytes = b""
    fds: list[int] = field(default_factory=list)

    @property
    def is_reply(self) -> bool:
        return bool(self.flags & FLAG_REPLY)

    def u64(self) -> int:
        if len(self.payload) != 8:
            raise ProtocolError(f"request {self.request}: payload of {len(self.payload)} bytes, expected 8")
        return struct.unpack("<Q", self.payload)[0]

    def with_u64(self, value: int) -> "Message":
        return Message(self.request, self.flags, struct.pack("<Q", value), self.fds)

    def vring_state(self) -> tuple[int, int]:
        """(index, num) of a SET_VRING_NUM-like payload."""
        if len(self.payload) != 8:
            raise ProtocolError(f"request {self.request}: payload of {len(self.payload)} bytes, expected 8")
        return struct.unpack("<II", self.payload)

    def encode(self) -> bytes:
        return HEADER.pack(self.request, self.flags, len(self.payload)) + self.payload


def request(code: int, payload: bytes = b"", need_reply: bool = False) -> Message:
    """A frontend request."""
    return Message(code, VERSION | (FLAG_NEED_REPLY if need_reply else 0), payload)


def u64(code: int, value: int) -> Message:
    return request(code, struct.pack("<Q", value))


class Reader:
    """Assembles messages from a non-blocking stream socket, keeping each message's
    fds with it. It reads exactly one message's bytes at a time (header, then
    payload): a peer's fds travel with its message's header, and reading past a
    message would hand the next message's fds to this one. `feed()` reads what is
    available and returns the completed messages. Raises ProtocolError on a
    malformed or oversized message and EOFError when the peer closed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.fds: list[int] = []

    def _wanted(self) -> int:
        if len(self.buffer) < HEADER.size:
            return HEADER.size - len(self.buffer)
        code, flags, size = HEADER.unpack_from(self.buffer)
        if flags & ~_KNOWN_FLAGS or flags & 0x3 != VERSION:
            raise ProtocolError(f"request {code}: bad flags 0x{flags:x}")
        if size > MAX_PAYLOAD:
            raise ProtocolError(f"request {code}: payload of {size} bytes (limit {MAX_PAYLOAD})")
        return HEADER.size + size - len(self.buffer)

    def feed(self, limit: int = 0) -> list[Message]:
        """Read what is available; return the completed messages (at most `limit`
        of them when it is not 0: the rest stays in the socket for the next call)."""
        out: list[Message] = []
        while True:
            wanted = self._wanted()
            if wanted == 0:
                code, flags, _size = HEADER.unpack_from(self.buffer)
                out.append(Message(code, flags, bytes(self.buffer[HEADER.size:]), self.fds))
                self.buffer = bytearray()
                self.fds = []
                if limit and len(out) >= limit:
                    return out
                continue
            fds = array.array("i")
            try:
                data, ancdata, flags, _addr = self.sock.recvmsg(wanted, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
            except BlockingIOError:
                return out
            for level, kind, cdata in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
            self.fds.extend(fds)
            if flags & socket.MSG_CTRUNC or len(self.fds) > MAX_FDS:
                raise ProtocolError(f"more than {MAX_FDS} file descriptors in one message")
            if not data:
                if out:
                    return out
                raise EOFError
            self.buffer += data

    def close_fds(self) -> None:
        close_fds(self.fds)
        self.fds = []


def send(sock: socket.socket, message: Message) -> None:
    """Send one message with its fds (blocking until sent)."""
    data = message.encode()
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", message.fds))] if message.fds else []
    sent = sock.sendmsg([data], ancillary)
    if sent < len(data):
        sock.sendall(data[sent:])


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def recv_blocking(sock: socket.socket, timeout: float) -> Message:
    """Read one whole message from a socket within `timeout` (the probe and test
    clients). Raises EOFError, ProtocolError, TimeoutError."""
    deadline = time.monotonic() + timeout
    sock.setblocking(False)
    reader = Reader(sock)
    while True:
        messages = reader.feed()
        if messages:
            return messages[0]
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            raise TimeoutError("no answer from the vhost-user peer")
