"""vhost-user peers for the benchmarks and the tests, speaking the protocol raw
(vucompat.vhostuser.protocol): an honest frontend's connection set-up, timed, and
hostile peers that storm a socket.

The hostile peers run in a process of their own, as an attacker would (and so that
their loops never hold the measuring process's interpreter):

    python -m vucompat_testing.peers flood PATH --seconds S --peers N
        N connections that send need-reply requests (GET_FEATURES) as fast as the
        socket takes them and never read an answer
    python -m vucompat_testing.peers connect PATH --seconds S --burst N
        unpaced bursts of N non-blocking connects, each burst closed before the next
    python -m vucompat_testing.peers hold PATH --seconds S --connections N
        N connections opened as fast as they are accepted, held silent, then closed

Each prints one JSON object of counts on stdout when it is done (`summary` keys below).
"""

from __future__ import annotations

import argparse
import errno
import json
import resource
import select
import socket
import struct
import sys
import time
from pathlib import Path

from vucompat.vhostuser import protocol as vu


def handshake(path: Path | str, timeout: float = 5.0) -> float:
    """A frontend's connection set-up on `path` (SET_OWNER, GET_FEATURES,
    GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_FEATURES with a
    reply), as bench/relay.py times it; return the seconds it took. Raises OSError,
    EOFError, TimeoutError (no answer within `timeout` to one message), ProtocolError."""
    start = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))

        def ask(code: int) -> int:
            vu.send(sock, vu.request(code))
            return vu.recv_blocking(sock, timeout).u64()

        vu.send(sock, vu.request(vu.SET_OWNER))
        features = ask(vu.GET_FEATURES)
        protocol = ask(vu.GET_PROTOCOL_FEATURES)
        sock.settimeout(timeout)
        vu.send(sock, vu.u64(vu.SET_PROTOCOL_FEATURES, protocol))
        ask(vu.GET_QUEUE_NUM)
        sock.settimeout(timeout)
        vu.send(sock, vu.request(vu.SET_FEATURES, struct.pack("<Q", features), need_reply=True))
        vu.recv_blocking(sock, timeout)
    return time.perf_counter() - start


def _connect(path: str) -> tuple[socket.socket | None, int]:
    """A non-blocking connect: (socket, 0), or (None, errno)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect(path)
    except OSError as err:
        sock.close()
        return None, err.errno or -1
    return sock, 0


def _connect_patiently(path: str, deadline: float) -> tuple[socket.socket | None, int]:
    """Connect, retrying a full backlog (EAGAIN) every millisecond until `deadline`;
    (socket, refusals) or (None, refusals)."""
    refused = 0
    while time.monotonic() < deadline:
        sock, err = _connect(path)
        if sock is not None:
            return sock, refused
        if err != errno.EAGAIN:
            return None, refused
        refused += 1
        time.sleep(0.001)
    return None, refused


def flood(path: str, seconds: float, peers: int) -> dict[str, int]:
    """`peers` connections sending GET_FEATURES until their sockets are full, and
    again whenever the relay reads, for `seconds`; none ever reads an answer."""
    deadline = time.monotonic() + seconds
    message = vu.request(vu.GET_FEATURES).encode() * 64
    socks, refused = [], 0
    for _ in range(peers):
        sock, n = _connect_patiently(path, deadline)
        refused += n
        if sock is not None:
            socks.append(sock)
    size = vu.HEADER.size
    sent = cut = 0
    offset = {sock: 0 for sock in socks}  # bytes sent on each: the next send resumes mid-message
    live = list(socks)
    while live and time.monotonic() < deadline:
        _r, writable, _x = select.select([], live, [], max(0.0, min(0.2, deadline - time.monotonic())))
        for sock in writable:
            try:
                n = sock.send(message[offset[sock] % size:])
            except BlockingIOError:
                continue
            except OSError:  # the relay closed it (EPIPE, ECONNRESET)
                cut += 1
                live.remove(sock)
                continue
            offset[sock] += n
            sent += n
    for sock in socks:
        sock.close()
    return {"connections": len(socks), "refused": refused, "messages_sent": sent // size,
            "cut_by_relay": cut}


def connect_storm(path: str, seconds: float, burst: int) -> dict[str, int]:
    """Unpaced bursts of `burst` non-blocking connects for `seconds` (at least one
    burst); every connection of a burst is closed before the next burst."""
    deadline = time.monotonic() + seconds
    attempts = accepted = eagain = other = bursts = 0
    first_burst_eagain = -1
    while bursts == 0 or time.monotonic() < deadline:
        opened, refused = [], 0
        for _ in range(burst):
            sock, err = _connect(path)
            attempts += 1
            if sock is not None:
                opened.append(sock)
            elif err == errno.EAGAIN:
                refused += 1
            else:
                other += 1
        accepted += len(opened)
        eagain += refused
        if first_burst_eagain < 0:
            first_burst_eagain = refused
        for sock in opened:
            sock.close()
        bursts += 1
    return {"bursts": bursts, "attempts": attempts, "connected": accepted, "eagain": eagain,
            "other_errors": other, "first_burst_eagain": first_burst_eagain}


def hold(path: str, seconds: float, connections: int) -> dict[str, int]:
    """Open `connections` connections as fast as they are accepted (within `seconds`),
    hold them silent until `seconds` are over, then close them."""
    deadline = time.monotonic() + seconds
    socks, refused, failed = [], 0, 0
    while len(socks) < connections and time.monotonic() < deadline:
        sock, n = _connect_patiently(path, deadline)
        refused += n
        if sock is None:
            failed += 1
            time.sleep(0.01)
        else:
            socks.append(sock)
    opened_in = time.monotonic()
    time.sleep(max(0.0, deadline - time.monotonic()))
    # connections the relay closed while they were held read as EOF (or an error) now
    dropped = 0
    poller = select.poll()  # (select() stops at fd 1023)
    for sock in socks:
        poller.register(sock, select.POLLIN)
    ready = {fd for fd, _events in poller.poll(0)}
    for sock in socks:
        try:
            if sock.fileno() in ready and sock.recv(1) == b"":
                dropped += 1
        except OSError:
            dropped += 1
        sock.close()
    return {"held": len(socks), "refused": refused, "failed": failed, "dropped_by_relay": dropped,
            "seconds_to_open": round(opened_in - (deadline - seconds), 3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vucompat_testing.peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["flood", "connect", "hold"])
    parser.add_argument("path")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--peers", type=int, default=20)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=600)
    args = parser.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the attacker's own fds are not the point
    if args.kind == "flood":
        summary = flood(args.path, args.seconds, args.peers)
    elif args.kind == "connect":
        summary = connect_storm(args.path, args.seconds, args.burst)
    else:
        summary = hold(args.path, args.seconds, args.connections)
    json.dump(summary, sys.stdout)
    print()


if __name__ == "__main__":
    main()
